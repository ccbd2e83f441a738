"""``sae-core universality``: feature universality of two models (one hook pair, or every layer pair);
``sae-core steer-pair``: both models steered through one matched pair, against random pairs."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Optional

import typer

from sae_core.cli.common import Bar, WorkspaceOpt, config_option, friendly
from sae_core.io import dumps_json
from sae_core.universality.analysis import AnalysisConfig
from sae_core.universality.job import UniversalityConfig
from sae_core.universality.matching import MatchConfig
from sae_core.universality.pair_steering import steer_result_pair

commands = typer.Typer()
# the options that name one step of the comparison: given with --paper, they replace the authors' choice
STEP_OPTIONS = {"codes": ("", "codes"), "subspaces": ("", "subspaces"), "rule": ("match", "rule"),
                "min_corr": ("match", "min_corr"), "nonconcept": ("match", "drop_nonconcept"),
                "shared": ("match", "shared_token"), "dedupe": ("match", "dedupe"), "order": ("match", "order"),
                "nonconcept_list": ("match", "nonconcept_list"), "paper_compat": ("analysis", "paper_compat")}


@commands.command("universality")
@friendly
def universality(ctx: typer.Context,
                 model_a: str = config_option(UniversalityConfig, "model_a", "--model-a"),
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
                 order: str = config_option(MatchConfig, "order"),
                 nonconcept_list: str = config_option(MatchConfig, "nonconcept_list", "--nonconcept-list"),
                 codes: str = config_option(UniversalityConfig, "codes"),
                 subspaces: str = config_option(UniversalityConfig, "subspaces"),
                 groups: Optional[str] = typer.Option(None, "--groups", help="Keyword groups of the semantic "
                                                      "subspaces: zoo, paper (the paper's eight categories), or a "
                                                      "JSON file {\"name\": [\"word\", ...]} [default: zoo; paper "
                                                      "with --subspaces concepts or --paper]."),
                 runs: int = config_option(AnalysisConfig, "runs"),
                 paper_compat: bool = config_option(AnalysisConfig, "paper_compat", "--paper-compat"),
                 paper: bool = typer.Option(False, "--paper", help="Every step as the authors' code: pre-activations, "
                                            "their non-concept list and filter order, one pair per A feature, "
                                            "one-direction SVCCA, their semantic subspaces. Step options you give "
                                            "as well still apply."),
                 as_json: bool = typer.Option(False, "--json", help="Print the scores, p-values and pair counts as JSON."),
                 layers: bool = typer.Option(False, "--layers", help="Every block's residual stream of A against "
                                             "every one of B (the hooks are ignored): heatmaps per measure."),
                 workspace: Optional[Path] = WorkspaceOpt):
    """Feature universality of two models: match SAE features, score the matched spaces against nulls."""
    from sae_core.universality.job import Universality, universality_to_workspace
    from sae_core.workspace import Workspace

    cfg = UniversalityConfig(model_a, hook_a, model_b, hook_b, sae_a, sae_b, d_sae=d_sae, k=k,
                             train_tokens=train_tokens, n_tokens=tokens, codes=codes, subspaces=subspaces,
                             groups=_groups(groups),
                             match=MatchConfig(rule, min_corr, nonconcept, shared, dedupe, order, nonconcept_list),
                             analysis=AnalysisConfig(runs=runs, paper_compat=paper_compat))
    if paper:
        cfg = _paper(cfg, ctx)
    if layers:
        return _universality_grid(cfg, as_json, workspace)
    bar = None if as_json else Bar("universality", unit="stage")
    art = universality_to_workspace(Workspace(workspace), cfg, on_progress=bar)
    if bar:
        bar.close()
    r = Universality.open(art.path).results
    if as_json:
        typer.echo(dumps_json({"artifact": art.name, "mode": r["mode"], "codes": r["codes"], "n_pairs": r["n_pairs"],
                               "n_tokens": r["n_tokens"], "steps": r["steps"], "step_mean_corr": r["step_mean_corr"],
                               "unique_a": r["unique_a"], "runs": r["runs"], "warnings": r["warnings"],
                               "scores": {m: {"value": s["value"], "p": s["shuffled"]["p"],
                                              "p_authors": s["shuffled"]["p_authors"], "z": s["shuffled"]["z"],
                                              "null_mean": s["shuffled"]["null_mean"],
                                              "random_subsets_p": s["random_subsets"] and s["random_subsets"]["p"],
                                              "ci95": s["ci95"], "used": s["used"]}
                                          for m, s in r["scores"].items()},
                               "subspaces": _subspace_json(r["subspaces"])}))
        return
    typer.echo(f"{art.kind}/{art.name} -> {art.path}")
    typer.echo("\n".join(study_report(r, model_a, hook_a, model_b, hook_b)))
    for w in r["warnings"]:
        typer.secho(f"note: {w}", fg=typer.colors.YELLOW)


def study_report(r: dict, model_a: str, hook_a: str, model_b: str, hook_b: str) -> list[str]:
    """The printed result: the mode, the pairs each filter left (with their mean correlation), the
    scores against their nulls, and the semantic subspaces."""
    from sae_core.universality.measures import MEASURES

    out = [f"mode: {r['mode']} ({r['codes']} correlated; matching: {r['match_label']})",
           f"{model_a} {hook_a} vs {model_b} {hook_b}: {r['n_tokens']:,} tokens; {r['unique_a']} distinct A features "
           "in the pairs kept", f"{'pairs after':36}{'pairs':>7}{'mean r':>8}"]
    out += [f"{stage:36}{n:>7}{_num(mc, '.3f'):>8}" for (stage, n), mc in zip(r["steps"], r["step_mean_corr"])]
    authors = r["mode"] == "paper"
    out.append(f"{'measure':14}{'paired':>9}{'shuffled':>10}{'p':>8}" + (f"{'p auth':>8}" if authors else "")
               + f"{'z':>8}{'subsets':>9}{'p':>8}  95% interval")
    for m in [m for m in MEASURES if m in r["scores"]]:
        s = r["scores"][m]
        sh, rs = s["shuffled"], s["random_subsets"]
        sub = f"{rs['null_mean']:>9.3f}{rs['p']:>8.3f}" if rs else f"{'-':>9}{'-':>8}"
        out.append(f"{m:14}{s['value']:>9.3f}{sh['null_mean']:>10.3f}{sh['p']:>8.3f}"
                   + (f"{sh['p_authors']:>8.3f}" if authors else "")
                   + f"{_num(sh['z'], '.1f'):>8}{sub}  [{_num(s['ci95'][0], '.3f')}, {_num(s['ci95'][1], '.3f')}]")
    out.append(f"p = (1 + null runs >= paired) / (1 + {r['runs']} runs)"
               + ("; p auth = (null runs >= paired) / runs, as the authors' code" if authors else ""))
    concepts = r["subspace_procedure"] == "concepts"
    how = ("the authors: concept features of each model, paired within the group" if concepts
           else "groups of the matched pairs")
    out.append(f"\nsemantic subspaces ({how})")
    out.append(f"{'group':14}{'words':>6}" + (f"{'feat A':>7}{'feat B':>7}" if concepts else "") + f"{'pairs':>6}"
               + "".join(f"{m:>9}{'p':>7}" for m in ("svcca", "rsa")))
    for name, g in r["subspaces"].items():
        cells = "".join(f"{s['value']:>9.3f}{s['shuffled']['p']:>7.3f}" if "value" in (s := g["scores"].get(m, {}))
                        else f"{'-':>9}{'':>7}" for m in ("svcca", "rsa"))
        feats = f"{g['features_a']:>7}{g['features_b']:>7}" if concepts else ""
        words = len(g["in_vocabulary"])
        out.append(f"{name:14}{words:>6}{feats}{g['n_pairs']:>6}{cells}" + ("  (no word in the vocabulary)"
                                                                             if not words else ""))
    return out


def _subspace_json(sub: dict) -> dict:
    return {n: {k: v for k, v in g.items() if k not in ("scores", "pairs")}
            | {m: {"value": s["value"], "p": s["shuffled"]["p"], "p_authors": s["shuffled"]["p_authors"]}
               for m, s in g["scores"].items() if "value" in s} for n, g in sub.items()}


def _groups(text: Optional[str]) -> Optional[dict]:
    from sae_core.universality.keyword_groups import AUTHORS_GROUPS, read_groups, zoo_groups

    if text is None:
        return None
    return {"zoo": zoo_groups, "paper": lambda: dict(AUTHORS_GROUPS)}.get(text, lambda: read_groups(text))()


def _paper(cfg: UniversalityConfig, ctx: typer.Context) -> UniversalityConfig:
    """``paper_config(cfg)``, but with the step options given on the command line as given."""
    from dataclasses import replace

    from sae_core.universality.job import paper_config

    p = paper_config(cfg)
    for option, (part, name) in STEP_OPTIONS.items():
        # by name: typer carries its own copy of click, whose ParameterSource is not click's
        if getattr(ctx.get_parameter_source(option), "name", None) == "COMMANDLINE":
            value = getattr(getattr(cfg, part) if part else cfg, name)
            p = (replace(p, **{part: replace(getattr(p, part), **{name: value})}) if part
                 else replace(p, **{name: value}))
    return p


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
    m = g["measures"][0]
    before, kept = heat(g, m, "mean_corr_all"), heat(g, m, "mean_corr")
    typer.echo("\nmean correlation of the matched pairs, before the filters / of the pairs kept")
    typer.echo(f"{'':6}" + "".join(f"{c:>22}" for c in short))
    for i, ha in enumerate(g["hooks_a"]):
        typer.echo(f"{ha.split('.')[1]:6}" + "".join(
            f"{'failed':>22}" if np.isnan(kept[i, j]) else f"{before[i, j]:>13.3f} /{kept[i, j]:>6.3f}"
            for j in range(len(short))))
    for c in g["cells"]:
        if "error" in c:
            typer.secho(f"note: {c['hook_a']} x {c['hook_b']}: {c['error']}", fg=typer.colors.YELLOW)




@commands.command("steer-pair")
@friendly
def steer_pair_command(result: Optional[str] = typer.Option(None, "--result", help="A universality result "
                                                            "(default: the newest)."),
                       pair: Optional[int] = typer.Option(None, "--pair", help="The pair's index in the result "
                                                          "(default: the strongest correlation)."),
                       fraction: float = config_option(steer_result_pair, "fraction", "--fraction",
                                                       help="Each side's feature added at this multiple of its "
                                                       "typical activation (its mean where it fires)."),
                       runs: int = config_option(steer_result_pair, "runs", "--runs",
                                                 help="Random pairs in the null."),
                       as_json: bool = typer.Option(False, "--json", help="Print the effect as JSON."),
                       workspace: Optional[Path] = WorkspaceOpt):
    """Steer both models through a matched pair of features at matched strength: how alike the two
    next-token effects are, against random pairs."""
    from sae_core.errors import ArtifactError
    from sae_core.universality.job import Universality
    from sae_core.workspace import Workspace

    ws = Workspace(workspace)
    arts = ws.list("universality")
    art = next((a for a in arts if a.name == result), None) if result else (arts[0] if arts else None)
    if art is None:
        raise ArtifactError(f"no universality result {result or ''} in {ws.root}; build one with "
                            "`sae-core universality`")
    u = Universality.open(art.path)
    pairs = u.results["pairs"]
    i = max(range(len(pairs)), key=lambda j: pairs[j]["corr"]) if pair is None and pairs else pair
    e = steer_result_pair(ws, u, -1 if i is None else i, fraction=fraction, runs=runs)
    if as_json:
        typer.echo(dumps_json(e.to_json()))
        return
    cfg = u.config
    typer.echo(f"pair {e.pair}: {cfg['model_a']} feature {e.a} <-> {cfg['model_b']} feature {e.b} "
               f"(correlation {pairs[e.pair]['corr']:.3f}); each added at {e.fraction:g}x its typical activation "
               f"({e.strength_a:.3g} and {e.strength_b:.3g}), on {e.n_positions:,} positions of shared prompts")
    typer.echo(f"effect similarity (cosine of the next-token log-prob changes): {e.similarity:.3f}; random pairs "
               f"{statistics.mean(e.null):.3f} +- {statistics.stdev(e.null):.3f} ({len(e.null)} runs), z {e.z:.1f}, p {e.p:.3f}")
    for side, model, raised in (("A", cfg["model_a"], e.raised_a), ("B", cfg["model_b"], e.raised_b)):
        typer.echo(f"raised most in {side} ({model}): " + ", ".join(f"{t!r} {v:+.2f}" for t, v in raised))

