"""``sae-core universality``: feature universality of two models (one hook pair, or every layer pair)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sae_core.cli.common import Bar, WorkspaceOpt, config_option, friendly
from sae_core.io import dumps_json
from sae_core.universality.analysis import AnalysisConfig
from sae_core.universality.job import UniversalityConfig
from sae_core.universality.matching import MatchConfig

commands = typer.Typer()


@commands.command("universality")
@friendly
def universality(model_a: str = config_option(UniversalityConfig, "model_a", "--model-a"),
                 hook_a: str = config_option(UniversalityConfig, "hook_a", "--hook-a"),
                 model_b: str = config_option(UniversalityConfig, "model_b", "--model-b"),
                 hook_b: str = config_option(UniversalityConfig, "hook_b", "--hook-b"),
                 sae_a: Optional[str] = config_option(UniversalityConfig, "sae_a", "--sae-a"),
                 sae_b: Optional[str] = config_option(UniversalityConfig, "sae_b", "--sae-b"),
                 tokens: int = config_option(UniversalityConfig, "n_tokens", "--tokens"),
                 d_sae: int = config_option(UniversalityConfig, "d_sae", "--d-sae"),
                 k: int = config_option(UniversalityConfig, "k"),
                 train_tokens: int = config_option(UniversalityConfig, "train_tokens", "--train-tokens"),
                 rule: str = config_option(MatchConfig, "rule"),
                 min_corr: float = config_option(MatchConfig, "min_corr", "--min-corr"),
                 nonconcept: bool = config_option(MatchConfig, "drop_nonconcept",
                                                  "--nonconcept-filter/--no-nonconcept-filter"),
                 shared: bool = config_option(MatchConfig, "shared_token", "--shared-token/--no-shared-token"),
                 dedupe: str = config_option(MatchConfig, "dedupe"),
                 runs: int = config_option(AnalysisConfig, "runs"),
                 paper_compat: bool = config_option(AnalysisConfig, "paper_compat", "--paper-compat"),
                 as_json: bool = typer.Option(False, "--json", help="Print the scores, p-values and pair counts as JSON."),
                 layers: bool = typer.Option(False, "--layers", help="Every block's residual stream of A against "
                                             "every one of B (the hooks are ignored): heatmaps per measure."),
                 workspace: Optional[Path] = WorkspaceOpt):
    """Feature universality of two models: match SAE features, score the matched spaces against nulls."""
    from sae_core.universality.job import Universality, universality_to_workspace
    from sae_core.universality.measures import MEASURES
    from sae_core.workspace import Workspace

    cfg = UniversalityConfig(model_a, hook_a, model_b, hook_b, sae_a, sae_b, d_sae=d_sae, k=k,
                             train_tokens=train_tokens, n_tokens=tokens,
                             match=MatchConfig(rule, min_corr, nonconcept, shared, dedupe),
                             analysis=AnalysisConfig(runs=runs, paper_compat=paper_compat))
    if layers:
        return _universality_grid(cfg, as_json, workspace)
    bar = None if as_json else Bar("universality", unit="stage")
    art = universality_to_workspace(Workspace(workspace), cfg, on_progress=bar)
    if bar:
        bar.close()
    r = Universality.open(art.path).results
    if as_json:
        typer.echo(dumps_json({"artifact": art.name, "n_pairs": r["n_pairs"], "n_tokens": r["n_tokens"],
                               "steps": r["steps"], "runs": r["runs"], "warnings": r["warnings"],
                               "scores": {m: {"value": s["value"], "p": s["shuffled"]["p"], "z": s["shuffled"]["z"],
                                              "null_mean": s["shuffled"]["null_mean"],
                                              "random_subsets_p": s["random_subsets"] and s["random_subsets"]["p"],
                                              "ci95": s["ci95"], "used": s["used"]}
                                          for m, s in r["scores"].items()}}))
        return
    typer.echo(f"{art.kind}/{art.name} -> {art.path}")
    typer.echo(f"{model_a} {hook_a} vs {model_b} {hook_b}: {r['n_tokens']:,} tokens; pairs "
               + " -> ".join(f"{n} ({stage})" for stage, n in r["steps"]))
    typer.echo(f"{'measure':14}{'paired':>9}{'shuffled':>10}{'p':>8}{'z':>8}{'subsets':>9}{'p':>8}  95% interval")
    for m in [m for m in MEASURES if m in r["scores"]]:
        s = r["scores"][m]
        sh, rs = s["shuffled"], s["random_subsets"]
        sub = f"{rs['null_mean']:>9.3f}{rs['p']:>8.3f}" if rs else f"{'-':>9}{'-':>8}"
        typer.echo(f"{m:14}{s['value']:>9.3f}{sh['null_mean']:>10.3f}{sh['p']:>8.3f}{_num(sh['z'], '.1f'):>8}{sub}"
                   f"  [{_num(s['ci95'][0], '.3f')}, {_num(s['ci95'][1], '.3f')}]")
    typer.echo(f"p = (1 + null runs >= paired) / (1 + {r['runs']} runs)")
    typer.echo(f"\n{'semantic subspace':18}{'pairs':>6}" + "".join(f"{m:>10}{'p shuf':>8}{'p subs':>8}"
                                                               for m in ("svcca", "rsa")))
    for name, g in r.get("subspaces", {}).items():
        cells = "".join(f"{s['value']:>10.3f}{s['shuffled']['p']:>8.3f}{s['matched_subsets']['p']:>8.3f}"
                        if "value" in (s := g["scores"].get(m, {})) else f"{'-':>10}{'':>8}{'':>8}"
                        for m in ("svcca", "rsa"))
        typer.echo(f"{name:18}{g['n_pairs']:>6}{cells}")
    for w in r["warnings"]:
        typer.secho(f"note: {w}", fg=typer.colors.YELLOW)


def _num(x: float | None, spec: str) -> str:
    """A number of the results as printed; null (non-finite: e.g. the z-score of a null distribution
    with no spread) is "n/a"."""
    return "n/a" if x is None else format(x, spec)


def _universality_grid(cfg, as_json: bool, workspace) -> None:
    import numpy as np

    from sae_core.universality.grid import Grid, GridConfig, grid_to_workspace, heat
    from sae_core.workspace import Workspace

    bar = None if as_json else Bar("layer pairs", unit="pair")
    art = grid_to_workspace(Workspace(workspace), GridConfig(base=cfg), on_progress=bar)
    if bar:
        bar.close()
    g = Grid.open(art.path).results
    if as_json:
        typer.echo(dumps_json({"artifact": art.name, "hooks_a": g["hooks_a"], "hooks_b": g["hooks_b"],
                               "cells": g["cells"], "best": {m: {k: v for k, v in b.items() if k != "max_null"}
                                                            | {"max_null_p": b["max_null"]["p"]}
                                                            for m, b in g["best"].items()}}))
        return
    typer.echo(f"{art.kind}/{art.name} -> {art.path}")
    short = [h.split(".")[1] for h in g["hooks_b"]]
    for m in g["measures"]:
        v, p, n = heat(g, m), heat(g, m, "p"), heat(g, m, "n_pairs")
        typer.echo(f"\n{m} (rows: {cfg.model_a} layer, columns: {cfg.model_b} layer; value / p / pairs)")
        typer.echo(f"{'':6}" + "".join(f"{c:>22}" for c in short))
        for i, ha in enumerate(g["hooks_a"]):
            typer.echo(f"{ha.split('.')[1]:6}" + "".join(
                f"{'failed':>22}" if np.isnan(v[i, j]) else f"{v[i, j]:>8.3f} /{p[i, j]:>6.3f} /{int(n[i, j]):>5}"
                for j in range(len(short))))
        b = g["best"][m]
        typer.echo(f"best: {b['hook_a']} x {b['hook_b']} = {b['value']:.3f}; p against the maximum over all "
                   f"pairs: {b['max_null']['p']:.3f}")
    for c in g["cells"]:
        if "error" in c:
            typer.secho(f"note: {c['hook_a']} x {c['hook_b']}: {c['error']}", fg=typer.colors.YELLOW)


