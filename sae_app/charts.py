"""Plotly figures of the app, built from result tables (tested directly, not through the page)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

SCORING_COLORS = {"l2": "#1f77b4", "entropy": "#d62728"}
REFERENCE_STYLE = {"batchtopk": ("BatchTopK", "#2ca02c", "diamond"), "topk": ("TopK", "#7f7f7f", "square")}

# metric column -> (axis title, whether a log axis reads better)
SWEEP_METRICS = {
    "fvu": ("FVU (lower is better)", False),
    "ce_loss_recovered": ("CE loss recovered", False),
    "distinct_latents_per_batch": ("distinct latents per batch", True),
    "l0": ("L0 (active latents per token)", False),
    "pairwise_overlap": ("pairwise overlap of active sets", False),
    "kl_recovered": ("KL recovered", False),
}


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, log_x: bool, log_y: bool) -> go.Figure:
    fig.update_layout(title=title, height=340, margin=dict(t=50, b=45, l=55, r=10),
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"),
                      hovermode="closest", clickmode="event+select")
    fig.update_xaxes(title=x_title, type="log" if log_x else "linear")
    fig.update_yaxes(title=y_title, type="log" if log_y else "linear")
    return fig


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
            customdata=rows[["sae"]].to_numpy(),
            hovertemplate=f"l=%{{x:g}}<br>{metric}=%{{y:.4g}}<br>%{{customdata[0]}}<extra>{scoring}</extra>"))
    # References as dashed line traces, not add_hline: shapes take log10 values on a log axis.
    l_range = [sampled["l"].min(), sampled["l"].max()] if len(sampled) else [1, 1]
    for arch, (label, color, _) in REFERENCE_STYLE.items():
        ref = table[table["arch"] == arch]
        if len(ref) and metric in ref:
            y = float(ref[metric].iloc[0])
            fig.add_trace(go.Scatter(
                x=l_range, y=[y, y], mode="lines", name=label, line=dict(color=color, dash="dash"),
                customdata=ref[["sae"]].to_numpy().repeat(2, axis=0),
                hovertemplate=f"{label}<br>{metric}=%{{y:.4g}}<extra></extra>"))
    return _layout(fig, f"{y_title} vs l", "l (pool = K·l latents)", y_title, True, log_y)


def sweep_frontier(table: pd.DataFrame, scorings: list[str]) -> go.Figure:
    """FVU against L0 for every SAE: the sparsity/reconstruction frontier, references marked."""
    fig = go.Figure()
    sampled = table[table["arch"] == "sampled"]
    for scoring in scorings:
        rows = sampled[sampled["scoring"] == scoring].sort_values("l")
        fig.add_trace(go.Scatter(
            x=rows["l0"], y=rows["fvu"], mode="lines+markers+text", name=f"Sampled ({scoring})",
            text=[f"l={v:g}" for v in rows["l"]], textposition="top center",
            marker=dict(size=9, color=SCORING_COLORS.get(scoring)), line=dict(color=SCORING_COLORS.get(scoring)),
            customdata=rows[["sae"]].to_numpy(),
            hovertemplate="L0=%{x:.2f}<br>FVU=%{y:.4g}<br>%{customdata[0]}<extra></extra>"))
    for arch, (label, color, symbol) in REFERENCE_STYLE.items():
        ref = table[table["arch"] == arch]
        if len(ref):
            fig.add_trace(go.Scatter(
                x=ref["l0"], y=ref["fvu"], mode="markers", name=label,
                marker=dict(size=13, color=color, symbol=symbol), customdata=ref[["sae"]].to_numpy(),
                hovertemplate=f"{label}<br>L0=%{{x:.2f}}<br>FVU=%{{y:.4g}}<extra></extra>"))
    return _layout(fig, "FVU vs L0 frontier", "L0 (active latents per token)", "FVU", False, False)
