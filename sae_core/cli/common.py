"""What every command group shares: options, progress bars fed by the library's callbacks, and
the one-line error format (``SAECoreError`` -> ``error: ...`` on stderr, exit status 2)."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import typer
from tqdm import tqdm

from sae_core.errors import SAECoreError
from sae_core.models.texts import TextSource

WorkspaceOpt = typer.Option(None, "--workspace", "-w",
                            help="Workspace directory (default: $SAE_STUDIO_WORKSPACE or ./workspace).")


def friendly(fn):
    """Turn SAECoreError into a one-line message and exit status 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SAECoreError as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
    return wrapper


CorpusOpt = typer.Option(None, "--corpus", help="Your text instead of the zoo corpus: a .txt (one "
                         "document a line), .jsonl or .parquet file, or a datasets save_to_disk dir.")
ColumnOpt = typer.Option("text", "--text-column", help="The text column of a .jsonl/.parquet/datasets corpus.")
SplitOpt = typer.Option("train", "--split", help="The split of a DatasetDict directory.")
AutocastOpt = typer.Option(None, "--autocast", help="bf16: run under bfloat16 autocast (weights stay float32).")
ShardOpt = typer.Option(65536, "--shard-tokens", help="Rows per store shard of a new harvest or import "
                        "(data-parallel ranks each read whole shards).")



def text_source(corpus: Optional[Path], column: str, split: str):
    return TextSource(str(corpus), column, split).check() if corpus else TextSource()


class Bar:
    """A tqdm bar fed by the library's ``on_progress(done, total[, text])`` callbacks."""

    def __init__(self, desc: str, unit: str = "tok"):
        self.bar = tqdm(desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True)

    def __call__(self, done: int, total: int, text: str = "") -> None:
        self.bar.total = total
        self.bar.n = done
        if text:
            self.bar.set_postfix_str(text, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class StepBar:
    """A tqdm bar fed by the trainer's ``on_step(log, total)``."""

    def __init__(self, desc: str):
        self.bar = tqdm(desc=desc, unit="step", dynamic_ncols=True)

    def __call__(self, entry, total: int) -> None:
        self.bar.total = total
        self.bar.n = entry.step
        self.bar.set_postfix(sq_err=f"{entry.sq_err:.3g}", l0=f"{entry.l0:.1f}", refresh=False)
        self.bar.refresh()
        if entry.step == total:
            self.bar.close()




def floats(text: str, option: str) -> tuple[float, ...]:
    """A comma-separated option as numbers; anything else is one clear line, not a traceback."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{option} {text!r}: give comma-separated numbers, e.g. 1,2,4") from None

