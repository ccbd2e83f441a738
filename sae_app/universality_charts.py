"""Plotly figures of the Universality page, built from a ``universality`` result (tested directly)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from sae_app.charts import titled as _layout

MEASURE_NAMES = {"svcca": "SVCCA", "rsa": "RSA", "cka": "CKA (biased)", "cka_debiased": "CKA (debiased)",
                 "mutual_knn": "mutual kNN"}
PAIRED, SHUFFLED, SUBSETS = "#1f77b4", "#7f7f7f", "#bcbd22"


def ordered(results: dict) -> list[str]:
    """The result's measures in their usual order (the stored JSON sorts them by name)."""
    from sae_core.universality.measures import MEASURES

    return [m for m in MEASURES if m in results["scores"]] + sorted(set(results["scores"]) - set(MEASURES))


def scores_vs_nulls(results: dict) -> go.Figure:
    """Per measure: the paired value (with its 95% interval) beside both nulls' means (+- one std)."""
    names = ordered(results)
    labels = [MEASURE_NAMES.get(n, n) for n in names]
    s = results["scores"]
    fig = go.Figure()
    fig.add_trace(go.Bar(
        x=labels, y=[s[n]["value"] for n in names], name="paired", marker_color=PAIRED,
        error_y=dict(type="data", symmetric=False, array=[s[n]["ci95"][1] - s[n]["value"] for n in names],
                     arrayminus=[s[n]["value"] - s[n]["ci95"][0] for n in names]),
        text=[f"p={s[n]['shuffled']['p']:.3g}" for n in names], textposition="outside",
        hovertemplate="%{x}: %{y:.3f}<br>%{text} (shuffled)<extra>paired</extra>"))
    for key, label, color in (("shuffled", "shuffled pairing", SHUFFLED), ("random_subsets", "random subsets", SUBSETS)):
        nulls = [s[n][key] for n in names]
        fig.add_trace(go.Bar(
            x=labels, y=[v["null_mean"] if v else None for v in nulls], name=label, marker_color=color,
            error_y=dict(type="data", array=[v["null_std"] if v else 0 for v in nulls]),
            hovertemplate=f"%{{x}}: mean %{{y:.3f}}<extra>{label}</extra>"))
    fig.update_layout(barmode="group")
    return _layout(fig, f"Matched spaces against chance ({results['n_pairs']} pairs, {results['runs']} null runs)",
                   "measure", "score")


def null_histogram(results: dict, measure: str) -> go.Figure:
    """The shuffled null's scores as a histogram, the paired value as a line."""
    s = results["scores"][measure]
    null = np.asarray(s["shuffled"]["null"])
    fig = go.Figure(go.Histogram(x=null.tolist(), nbinsx=30, name="shuffled pairing", marker_color=SHUFFLED))
    fig.add_vline(x=s["value"], line=dict(color=PAIRED, width=3),
                  annotation_text=f"paired {s['value']:.3f} (p={s['shuffled']['p']:.3g})",
                  annotation_position="top left")
    return _layout(fig, f"{MEASURE_NAMES.get(measure, measure)}: paired value against {null.size} shuffled pairings",
                   MEASURE_NAMES.get(measure, measure), "null runs")


def best_correlation_histogram(results: dict) -> go.Figure:
    """Each live B feature's best correlation with any A feature: same tokens against other documents
    (on the job's one-batch-in-four subset, so both sides count the same tokens)."""
    h = results["best_corr_hist"]
    edges = np.asarray(h["bins"])
    centres = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure()
    for key, label, color in (("paired", "same tokens", PAIRED), ("null", "other documents (null)", SHUFFLED)):
        fig.add_trace(go.Bar(x=centres, y=h[key], width=np.diff(edges), name=label, marker_color=color,
                             opacity=0.75, hovertemplate="corr %{x:.2f}: %{y} features<extra>" + label + "</extra>"))
    fig.update_layout(barmode="overlay")
    return _layout(fig, f"Best correlation of each B feature with model A's ({h['n_tokens']:,} tokens)",
                   "Pearson correlation", "B features")


def filter_funnel(results: dict) -> go.Figure:
    """Pairs left after each matching stage, with their mean correlation (the authors' figures)."""
    stages = [s for s, _ in results["steps"]]
    counts = [n for _, n in results["steps"]]
    means = results.get("step_mean_corr") or [None] * len(counts)
    text = [f"{n} (mean r {m:.2f})" if m is not None else str(n) for n, m in zip(counts, means)]
    fig = go.Figure(go.Funnel(y=stages, x=counts, text=text, textinfo="text", marker_color=PAIRED))
    return _layout(fig, f"Pairs through the filters ({results['match_label']})", "pairs", "", height=300)


HEAT_SHOWS = {"value": "score", "p": "p-value (shuffled null)", "n_pairs": "matched pairs",
              "mean_corr": "mean r of the pairs kept", "mean_corr_all": "mean r before the filters"}
_HEAT_FORMAT = {"value": "{:.3f}", "p": "{:.3g}", "n_pairs": "{:.0f}", "mean_corr": "{:.3f}", "mean_corr_all": "{:.3f}"}
_HEAT_COLOURS = {"value": "Viridis", "p": "Viridis_r", "n_pairs": "Blues", "mean_corr": "Viridis",
                 "mean_corr_all": "Viridis"}


def layer_heatmap(grid: dict, measure: str, model_a: str, model_b: str, show: str = "value") -> go.Figure:
    """For every layer pair, the measure (``show="value"``), its shuffled-null p-value (``"p"``)
    or the number of pairs kept (``"n_pairs"``); hover gives all three; the best cell boxed."""
    from sae_core.universality.grid import heat

    v, p, n = heat(grid, measure), heat(grid, measure, "p"), heat(grid, measure, "n_pairs")
    z = {"value": v, "p": p, "n_pairs": n}.get(show)
    z = heat(grid, measure, show) if z is None else z
    xs = [h.split(".")[1] for h in grid["hooks_b"]]
    ys = [h.split(".")[1] for h in grid["hooks_a"]]
    fmt = _HEAT_FORMAT[show]
    text = [[("failed" if np.isnan(z[i, j]) else fmt.format(z[i, j])) for j in range(len(xs))] for i in range(len(ys))]
    custom = np.dstack([np.nan_to_num(v, nan=-1), np.nan_to_num(p, nan=-1), np.nan_to_num(n, nan=0)]).tolist()
    label = MEASURE_NAMES.get(measure, measure)
    fig = go.Figure(go.Heatmap(
        z=np.where(np.isnan(z), None, z).tolist(), x=xs, y=ys, text=text, texttemplate="%{text}",
        customdata=custom, colorscale=_HEAT_COLOURS[show],
        colorbar=dict(title=label if show == "value" else HEAT_SHOWS[show]),
        hovertemplate=f"{model_a} layer %{{y}}, {model_b} layer %{{x}}<br>{measure} %{{customdata[0]:.3f}}"
                      "<br>p (shuffled) %{customdata[1]:.3g}<br>%{customdata[2]} pairs<extra></extra>"))
    b = grid["best"][measure]
    fig.add_shape(type="rect", x0=b["j"] - 0.5, x1=b["j"] + 0.5, y0=b["i"] - 0.5, y1=b["i"] + 0.5,
                  line=dict(color="red", width=3))
    fig.update_xaxes(type="category")  # layer numbers are names here, not positions on a scale
    fig.update_yaxes(type="category")
    what = label if show == "value" else HEAT_SHOWS[show].capitalize() if show.startswith("mean") else \
        f"{HEAT_SHOWS[show]} of {label}"
    return _layout(fig, f"{what} per layer pair (best {label} boxed: p={b['max_null']['p']:.3g} against the maximum "
                   "over all pairs)", f"{model_b} layer", f"{model_a} layer")


def subspaces(results: dict, measure: str = "svcca") -> go.Figure:
    """Per keyword group with enough pairs: the measure within it, its shuffled null and (this
    project's procedure) matched subsets of the same size (hover: pairs, p)."""
    groups = [(n, g) for n, g in results["subspaces"].items() if "value" in g["scores"].get(measure, {})]
    names = [f"{n} ({g['n_pairs']})" for n, g in groups]
    p_of = "matched_subsets" if all("matched_subsets" in g["scores"][measure] for _, g in groups) else "shuffled"
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=[g["scores"][measure]["value"] for _, g in groups], name="within the group",
                         marker_color=PAIRED, text=[f"p={g['scores'][measure][p_of]['p']:.3g}" for _, g in groups],
                         textposition="outside"))
    for key, label, color in (("shuffled", "shuffled pairing", SHUFFLED),
                              ("matched_subsets", "as many matched pairs at random", SUBSETS)):
        if key == "matched_subsets" and p_of != key:
            continue
        fig.add_trace(go.Bar(x=names, y=[g["scores"][measure][key]["null_mean"] for _, g in groups], name=label,
                             marker_color=color,
                             error_y=dict(type="data",
                                          array=[g["scores"][measure][key]["null_std"] for _, g in groups])))
    fig.update_layout(barmode="group")
    against = "random matched pairs" if p_of == "matched_subsets" else "the shuffled pairing"
    return _layout(fig, f"{MEASURE_NAMES.get(measure, measure)} within semantic subspaces (p: against {against})",
                   "keyword group (pairs)", MEASURE_NAMES.get(measure, measure))


def pair_effect_null(effect: dict) -> go.Figure:
    """A matched pair's effect similarity (a line) against random pairs steered alike (a histogram)."""
    fig = go.Figure(go.Histogram(x=effect["null"], nbinsx=20, name="random pairs", marker_color=SHUFFLED))
    fig.add_vline(x=effect["similarity"], line=dict(color=PAIRED, width=3),
                  annotation_text=f"this pair {effect['similarity']:.3f} (p={effect['p']:.3g})",
                  annotation_position="top left")
    return _layout(fig, f"Steering both models: this pair against {len(effect['null'])} random pairs",
                   "effect similarity (cosine of next-token log-prob changes)", "random pairs", height=300)
