"""What every command group shares: options, progress bars fed by the library's callbacks, and
the one-line error format (``SAECoreError`` -> ``error: ...`` on stderr, exit status 2)."""
from __future__ import annotations

import dataclasses
import functools
import inspect
from pathlib import Path
from typing import Any, Optional

import typer
from tqdm import tqdm

from sae_core.activations.job import harvest_hooks_to_workspace
from sae_core.errors import ArtifactError, SAECoreError
from sae_core.models.texts import TextSource

WorkspaceOpt = typer.Option(None, "--workspace", "-w",
                            help="Workspace directory (default: $SAE_STUDIO_WORKSPACE or ./workspace).")


def sae_dir(ws, sae: str) -> Path:
    """``--sae``: a directory (ours or SAELens-format) or the name of an SAE in the workspace."""
    if Path(sae).expanduser().is_dir():
        return Path(sae).expanduser()
    if (art := ws.get("sae", sae)) is not None:
        return art.path
    raise ArtifactError(f"--sae {sae!r} is neither a directory nor an SAE in {ws.root} "
                        "(see `sae-core workspace list --kind sae`)")


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


_FIELD_HELP = object()


def config_default(config, name: str) -> Any:
    """A config field's default: ``config`` is a dataclass (its field's default), an instance of one
    (the value it holds, e.g. a named recipe such as ``SWITCH_CONFIG``) or a library function (its
    keyword's default, for the jobs that take keywords rather than a config)."""
    if not dataclasses.is_dataclass(config):
        default = inspect.signature(config).parameters[name].default
        if default is inspect.Parameter.empty:
            raise TypeError(f"{config.__name__}({name}=...) has no default: give the command its own")
        return default
    f = {f.name: f for f in dataclasses.fields(config)}[name]
    if not isinstance(config, type):
        return getattr(config, name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"{config.__name__}.{name} has no default: give the command its own, documented, in a "
                    "dataclass of command defaults (e.g. TrainCommand)")


def option_default(value: Any) -> Any:
    """A field's default as the option shows and parses it: a tuple becomes comma-separated text."""
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return value


def config_option(config, name: str, *param_decls: str, help: Any = _FIELD_HELP, **kw) -> Any:
    """The ``typer.Option`` of a config field: its default is the field's (``config_default``; a tuple
    as comma-separated text) and its help the field's doc, ``metadata={"help": ...}`` (no doc, no
    help; ``help=`` words it for a command whose use differs, or a function's keyword). Options never
    restate a default: the option remembers its field (``.config_field``), and
    tests/cli/test_options.py checks every command's options against their fields."""
    if help is _FIELD_HELP:
        help = ({f.name: f for f in dataclasses.fields(config)}[name].metadata.get("help")
                if dataclasses.is_dataclass(config) else None)
    info = typer.Option(option_default(config_default(config, name)), *param_decls, help=help, **kw)
    info.config_field = (config, name)
    return info


ColumnOpt = config_option(TextSource, "column", "--text-column")
SplitOpt = config_option(TextSource, "split", "--split")
AutocastOpt = config_option(harvest_hooks_to_workspace, "autocast", "--autocast",
                            help="bf16: run under bfloat16 autocast (weights stay float32).")
ShardOpt = config_option(harvest_hooks_to_workspace, "shard_tokens", "--shard-tokens",
                         help="Rows per store shard of a new harvest or import (data-parallel ranks each read "
                         "whole shards).")


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


def words(text: str) -> tuple[str, ...]:
    """A comma-separated option as its non-empty items."""
    return tuple(w.strip() for w in text.split(",") if w.strip())


def floats(text: str, option: str) -> tuple[float, ...]:
    """A comma-separated option as numbers; anything else is one clear line, not a traceback."""
    try:
        return tuple(float(v) for v in words(text))
    except ValueError:
        raise typer.BadParameter(f"{option} {text!r}: give comma-separated numbers, e.g. 1,2,4") from None

