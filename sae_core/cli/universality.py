"""``sae-core universality``: feature universality of two models (one hook pair, or every layer pair)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sae_core.cli.common import Bar, WorkspaceOpt, friendly

commands = typer.Typer()


@commands.command("universality")
@friendly
def universality(model_a: str = typer.Option("zoo:tiny-a", "--model-a", help="Model A."),
                 hook_a: str = typer.Option("blocks.1.hook_resid_post", "--hook-a", help="Model A's hook."),
                 model_b: str = typer.Option("zoo:tiny-b", "--model-b", help="Model B (same tokenizer as A)."),
                 hook_b: str = typer.Option("blocks.3.hook_resid_post", "--hook-b", help="Model B's hook."),
                 sae_a: Optional[str] = typer.Option(None, "--sae-a", help="A workspace SAE for A (default: train one)."),
                 sae_b: Optional[str] = typer.Option(None, "--sae-b", help="A workspace SAE for B (default: train one)."),
                 tokens: int = typer.Option(200_000, help="Paired tokens the codes are compared on."),
                 d_sae: int = typer.Option(1024, "--d-sae", help="Width of SAEs the job trains."),
                 k: int = typer.Option(16, help="k of SAEs the job trains (BatchTopK)."),
                 train_tokens: int = typer.Option(1_000_000, "--train-tokens", help="Training tokens per trained SAE."),
                 rule: str = typer.Option("many_to_one", help="many_to_one (the paper's) | mutual | hungarian."),
                 min_corr: float = typer.Option(0.1, "--min-corr", help="Keep pairs correlated above this."),
                 nonconcept: bool = typer.Option(True, "--nonconcept-filter/--no-nonconcept-filter",
                                                 help="Drop pairs whose top tokens include punctuation or specials."),
                 shared: bool = typer.Option(True, "--shared-token/--no-shared-token",
                                             help="Keep pairs whose top tokens share one."),
                 dedupe: str = typer.Option("none", help="many_to_one only: none | best | first (the paper's)."),
                 runs: int = typer.Option(100, help="Null runs per measure (1000 when 100 pairs or fewer)."),
                 paper_compat: bool = typer.Option(False, "--paper-compat", help="SVCCA with one direction, as the "
                                                   "paper's code."),
                 as_json: bool = typer.Option(False, "--json", help="Print the scores, p-values and pair counts as JSON."),
                 layers: bool = typer.Option(False, "--layers", help="Every block's residual stream of A against "
                                             "every one of B (the hooks are ignored): heatmaps per measure."),
                 workspace: Optional[Path] = WorkspaceOpt):
    """Feature universality of two models: match SAE features, score the matched spaces against nulls."""
    import json

    from sae_core.universality.analysis import AnalysisConfig
    from sae_core.universality.job import Universality, UniversalityConfig, universality_to_workspace
    from sae_core.universality.matching import MatchConfig
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
        typer.echo(json.dumps({"artifact": art.name, "n_pairs": r["n_pairs"], "n_tokens": r["n_tokens"],
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
        typer.echo(f"{m:14}{s['value']:>9.3f}{sh['null_mean']:>10.3f}{sh['p']:>8.3f}{sh['z']:>8.1f}{sub}"
                   f"  [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]")
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


def _universality_grid(cfg, as_json: bool, workspace) -> None:
    import json

    import numpy as np

    from sae_core.universality.grid import Grid, GridConfig, grid_to_workspace, heat
    from sae_core.workspace import Workspace

    bar = None if as_json else Bar("layer pairs", unit="pair")
    art = grid_to_workspace(Workspace(workspace), GridConfig(base=cfg), on_progress=bar)
    if bar:
        bar.close()
    g = Grid.open(art.path).results
    if as_json:
        typer.echo(json.dumps({"artifact": art.name, "hooks_a": g["hooks_a"], "hooks_b": g["hooks_b"],
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


