"""Plotly figures of the Sampled-SAE page: a sweep's metrics against l, the frontier, training curves."""
from __future__ import annotations

import math
from typing import Mapping

import pandas as pd
import plotly.graph_objects as go

from sae_app.charts import selectable

SCORING_COLORS = {"l2": "#1f77b4", "l2sq": "#9467bd", "entropy": "#d62728"}
REFERENCE_STYLE = {"batchtopk": ("BatchTopK", "#2ca02c", "diamond"), "topk": ("TopK", "#7f7f7f", "square")}

# metric column -> (axis title, whether a log axis reads better)
SWEEP_METRICS = {
    "fvu": ("FVU (lower is better)", False),
    "ce_loss_recovered": ("CE loss recovered (vs zero ablation)", False),
    "distinct_latents_per_batch": ("distinct latents per batch", True),
    "l0": ("L0 (active latents per token)", False),
    "pairwise_overlap": ("pairwise overlap of active sets", False),
    "kl_recovered": ("KL recovered (vs zero ablation)", False),
}

# The training-curves legend lists every SAE of the sweep (12 in the demo): above the plot it wrapped
# onto the title, so it stands in a column right of the plot.
LEGEND_BESIDE = dict(orientation="v", x=1.02, xanchor="left", y=1, yanchor="top")


def sae_settings(row: Mapping) -> str:
    """An SAE of a sweep named by its settings, as the page shows it: "sampled, entropy, l=4",
    "batchtopk", "topk" (the artifact's hash name says nothing to a reader; issue #28)."""
    if row.get("arch") != "sampled":
        return str(row.get("arch"))
    return f"sampled, {row.get('scoring')}, l={row.get('l'):g}"


def sweep_settings(meta: Mapping) -> str:
    """A sweep named by its settings for the page's picker: "K=16, d_sae=512, l=1,2,4,8,16, l2 and
    entropy (12 SAEs)"; settings a sweep's record lacks are left out."""
    parts = [f"K={meta['k']}" if "k" in meta else "", f"d_sae={meta['d_sae']}" if "d_sae" in meta else "",
             "l=" + ",".join(f"{v:g}" for v in meta["ls"]) if meta.get("ls") else "",
             " and ".join(meta.get("scorings") or ())]
    n = f" ({meta['n_saes']} SAEs)" if "n_saes" in meta else ""
    return ", ".join(p for p in parts if p) + n


def hover_data(rows: pd.DataFrame) -> list[list[str]]:
    """``customdata`` per point: the artifact (what a click selects) and the settings (the hover)."""
    return [[r["sae"], sae_settings(r)] for r in rows.to_dict("records")]


def log_ticks(values) -> list[float]:
    """Tick values for a log axis over ``values``: 1-2-5 steps (0.01, 0.02, 0.05, 0.1, ...), only
    powers of ten when those are too many. Plotly's own ticks on a short log range label every
    digit, so "0.9" stood next to "1" (issue #28)."""
    pos = [float(v) for v in values if v == v and v > 0]
    if not pos:
        return []
    lo, hi = min(pos) / 1.1, max(pos) * 1.1  # about the padding plotly's autorange adds
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    steps = [float(f"{m}e{e}") for e in decades for m in (1, 2, 5)]
    inside = [v for v in steps if lo <= v <= hi]
    if len(inside) > 8:
        inside = [v for v in inside if f"{v:e}".startswith("1")]
    if len(inside) < 2:  # a range inside one 1-2-5 step: the data's ends, rounded
        inside = sorted({float(f"{min(pos):.2g}"), float(f"{max(pos):.2g}")})
    return inside


def _log_axis(values) -> dict:
    ticks = log_ticks(values)
    return dict(type="log", tickmode="array", tickvals=ticks, ticktext=[f"{v:g}" for v in ticks])


def _spaced_labels(x, y, labels: list[str], x_span: tuple[float, float], y_span: tuple[float, float],
                   min_gap: float = 0.07) -> list[str]:
    """Point labels of one line, merged where points sit closer than ``min_gap`` of both axes
    ("l=8, 16" on the first point, none on the next): when every L0 is near K the frontier's
    points bunch up and their labels were drawn over each other (issue #28). ``y`` is on a log axis."""
    def norm(v, span, log):
        a, b = (math.log10(s) for s in span) if log else span
        v = math.log10(v) if log else v
        return (v - a) / (b - a) if b > a else 0.0
    out, first, anchor = [], 0, None  # anchor: where the label of the current group stands
    for xv, yv, label in zip(x, y, labels):
        at = (norm(xv, x_span, False), norm(yv, y_span, True))
        if anchor is not None and abs(at[0] - anchor[0]) < min_gap and abs(at[1] - anchor[1]) < min_gap:
            out[first] += ", " + label.removeprefix("l=")
            out.append("")
        else:
            first, anchor = len(out), at
            out.append(label)
    return out


def sweep_vs_l(table: pd.DataFrame, metric: str, scorings: list[str]) -> go.Figure:
    """``metric`` against l, one line per scoring rule; BatchTopK/TopK as dashed horizontal lines."""
    y_title, log_y = SWEEP_METRICS[metric]
    fig = go.Figure()
    sampled = table[table["arch"] == "sampled"]
    for scoring in scorings:
        rows = sampled[sampled["scoring"] == scoring].sort_values("l")
        fig.add_trace(go.Scatter(
            x=rows["l"], y=rows[metric], mode="lines+markers", name=f"Sampled ({scoring})",
            marker=dict(size=9, color=SCORING_COLORS.get(scoring)), line=dict(color=SCORING_COLORS.get(scoring)),
            customdata=hover_data(rows),
            hovertemplate=f"%{{customdata[1]}}<br>{metric}=%{{y:.4g}}<extra></extra>"))
        batch_col = f"{metric}_batch_rule"  # the training rule on held-out batches, beside inference
        if batch_col in rows and rows[batch_col].notna().any():
            fig.add_trace(go.Scatter(
                x=rows["l"], y=rows[batch_col], mode="lines+markers", name=f"Sampled ({scoring}), batch rule",
                marker=dict(size=7, symbol="circle-open", color=SCORING_COLORS.get(scoring)),
                line=dict(color=SCORING_COLORS.get(scoring), dash="dot"), customdata=hover_data(rows),
                hovertemplate=f"%{{customdata[1]}}<br>{batch_col}=%{{y:.4g}}<extra>batch rule</extra>"))
    # References as dashed line traces, not add_hline: shapes take log10 values on a log axis.
    l_range = [sampled["l"].min(), sampled["l"].max()] if len(sampled) else [1, 1]
    for arch, (label, color, _) in REFERENCE_STYLE.items():
        ref = table[table["arch"] == arch]
        if len(ref) and metric in ref:
            y = float(ref[metric].iloc[0])
            fig.add_trace(go.Scatter(
                x=l_range, y=[y, y], mode="lines", name=label, line=dict(color=color, dash="dash"),
                customdata=hover_data(ref.iloc[[0, 0]]),
                hovertemplate=f"%{{customdata[1]}}<br>{metric}=%{{y:.4g}}<extra></extra>"))
    selectable(fig, f"{y_title} vs l", "l (pool = K·l latents)", y_title, True, log_y)
    # ticks at the sweep's own l values (1, 2, 4, 8, 16), not plotly's 0.9, 1, 2, 3, ...
    ls = sorted(set(sampled["l"].dropna()))
    fig.update_xaxes(tickmode="array", tickvals=ls, ticktext=[f"{v:g}" for v in ls])
    if log_y:
        shown = table[(table["arch"] != "sampled") | table["scoring"].isin(scorings)]
        fig.update_yaxes(**_log_axis(shown[[c for c in (metric, f"{metric}_batch_rule") if c in shown]].stack()))
    return fig


def sweep_frontier(table: pd.DataFrame, scorings: list[str]) -> go.Figure:
    """FVU (log axis) against L0 for every SAE: the sparsity/reconstruction frontier, references
    marked. Each line's points carry their l, the l2 line's to the left of its points and the
    entropy line's to the right, so two lines at one spot do not write over each other."""
    fig = go.Figure()
    sampled = table[table["arch"] == "sampled"]
    drawn = table[(table["arch"] != "sampled") | table["scoring"].isin(scorings)]
    x_span = (drawn["l0"].min(), drawn["l0"].max()) if len(drawn) else (0.0, 1.0)
    y_span = (drawn["fvu"].min(), drawn["fvu"].max()) if len(drawn) else (1.0, 1.0)
    for i, scoring in enumerate(scorings):
        rows = sampled[sampled["scoring"] == scoring].sort_values("l")
        fig.add_trace(go.Scatter(
            x=rows["l0"], y=rows["fvu"], mode="lines+markers+text", name=f"Sampled ({scoring})",
            text=_spaced_labels(rows["l0"], rows["fvu"], [f"l={v:g}" for v in rows["l"]], x_span, y_span),
            textposition="middle left" if i % 2 == 0 else "middle right",
            textfont=dict(color=SCORING_COLORS.get(scoring)),
            marker=dict(size=9, color=SCORING_COLORS.get(scoring)), line=dict(color=SCORING_COLORS.get(scoring)),
            customdata=hover_data(rows),
            hovertemplate="%{customdata[1]}<br>L0=%{x:.2f}<br>FVU=%{y:.4g}<extra></extra>"))
    for arch, (label, color, symbol) in REFERENCE_STYLE.items():
        ref = table[table["arch"] == arch]
        if len(ref):
            fig.add_trace(go.Scatter(
                x=ref["l0"], y=ref["fvu"], mode="markers", name=label,
                marker=dict(size=13, color=color, symbol=symbol), customdata=hover_data(ref),
                hovertemplate="%{customdata[1]}<br>L0=%{x:.2f}<br>FVU=%{y:.4g}<extra></extra>"))
    selectable(fig, "FVU vs L0 frontier", "L0 (active latents per token)", "FVU (log)", False, True)
    # the l values at the edges need room beside their points
    x_pad = max(0.08 * (x_span[1] - x_span[0]), 0.05)
    fig.update_xaxes(range=[x_span[0] - x_pad, x_span[1] + x_pad])
    return fig.update_yaxes(**_log_axis(drawn["fvu"]))


def training_curves(curves: pd.DataFrame, metric: str, scorings: list[str] | None = None) -> go.Figure:
    """One training-log field against tokens, one line per SAE of a sweep (colour: scoring rule;
    references in their own colours); an unstable run shows as a line that climbs back. Only the
    Sampled-SAEs of ``scorings`` are drawn (None: all), as in the page's other charts."""
    from sae_core.training.sweep import TRAINING_CURVES

    y_title, log_y = TRAINING_CURVES[metric]
    if scorings is not None:
        curves = curves[curves["scoring"].isna() | curves["scoring"].isin(scorings)]
    fig = go.Figure()
    labels = list(curves["label"].unique())
    for label, rows in curves.groupby("label", sort=False):
        scoring = rows["scoring"].iloc[0]
        ref = REFERENCE_STYLE.get(label)  # a reference's label is its architecture
        color = SCORING_COLORS.get(scoring) if ref is None else ref[1]
        # one colour per scoring rule; within it, larger l (later in the table) drawn stronger
        same = [lab for lab in labels if lab.endswith(f" {scoring}")] if ref is None else [label]
        opacity = 0.35 + 0.65 * same.index(label) / max(1, len(same) - 1) if len(same) > 1 else 1.0
        fig.add_trace(go.Scatter(
            x=rows["tokens"], y=rows[metric], mode="lines", name=label, opacity=opacity,
            line=dict(color=color, width=1.5, dash="dash" if ref else None),
            hovertemplate=f"{label}<br>tokens=%{{x:,}}<br>{metric}=%{{y:.4g}}<extra></extra>"))
    selectable(fig, f"{y_title} during training", "training tokens", y_title, False, log_y)
    # tall enough for the whole legend column (a clipped legend scrolls and hides its last lines)
    fig.update_layout(legend=LEGEND_BESIDE, margin=dict(t=45, r=150), height=max(360, 110 + 21 * len(fig.data)))
    if log_y:
        fig.update_yaxes(**_log_axis(curves[metric]))
    return fig
