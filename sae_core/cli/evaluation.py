"""``sae-core evaluate``: an SAE's downstream metrics (sparse probing, absorption, the lottery)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from sae_core.cli.common import Bar, WorkspaceOpt, config_option, friendly, words
from sae_core.evaluation.config import METRICS, EvaluationConfig, ProbingConfig

commands = typer.Typer()


def evaluation_config(metrics: tuple[str, ...], tasks: str, ks: str, labels: str) -> EvaluationConfig:
    """The config of ``--probing/--absorption/--lottery`` (none: all), ``--tasks``, ``--ks``, ``--labels``."""
    try:
        k_values = tuple(int(k) for k in words(ks))
    except ValueError:
        raise typer.BadParameter(f"--ks {ks!r}: give comma-separated whole numbers, e.g. 1,2,5,20") from None
    return EvaluationConfig(metrics=metrics or METRICS, labels_file=labels,
                            probing=ProbingConfig(tasks=words(tasks), ks=k_values))


def print_summary(name: str, summary: dict) -> None:
    typer.echo(f"sae/{name}")
    for key, value in summary.items():
        typer.echo(f"  {key:32s} {'-' if value is None else f'{value:.4f}'}")


@commands.command("evaluate")
@friendly
def evaluate(sae: str = typer.Option(..., "--sae", help="The name of an SAE in the workspace."),
             probing: bool = typer.Option(False, "--probing", help="Sparse probing (SAEBench's method)."),
             absorption: bool = typer.Option(False, "--absorption", help="Feature absorption (first letters)."),
             lottery: bool = typer.Option(False, "--lottery", help="The activation lottery (held-out activations)."),
             tasks: str = config_option(ProbingConfig, "tasks"),
             ks: str = config_option(ProbingConfig, "ks"),
             labels: str = config_option(EvaluationConfig, "labels_file", "--labels"),
             as_json: bool = typer.Option(False, "--json", help="Print the full results as JSON."),
             workspace: Optional[Path] = WorkspaceOpt):
    """Evaluate an SAE downstream and store the results with it (no metric flag: all three).
    Probing uses the zoo's labelled tasks, plus --labels FILE.jsonl ({"text", "label"} lines)."""
    from sae_core.errors import ArtifactError
    from sae_core.evaluation.job import evaluate_saes, load_evaluation
    from sae_core.workspace import Workspace

    ws = Workspace(workspace)
    art = ws.get("sae", sae)
    if art is None:
        raise ArtifactError(f"--sae {sae!r} is not an SAE in {ws.root} (see `sae-core workspace list --kind sae`)")
    chosen = tuple(m for m, on in zip(METRICS, (probing, absorption, lottery)) if on)
    cfg = evaluation_config(chosen, tasks, ks, labels)
    bar = Bar("evaluate", unit="step")
    [summary] = evaluate_saes(ws, [art], cfg, on_progress=bar)
    bar.close()
    if as_json:
        typer.echo(json.dumps({m: load_evaluation(ws, art, m, cfg) for m in cfg.metrics}, indent=1, allow_nan=False))
        return
    print_summary(art.name, summary)
