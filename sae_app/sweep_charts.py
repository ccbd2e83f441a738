"""Plotly figures of the Sampled-SAE page: a sweep's metrics against l, the frontier, training curves."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from sae_app.charts import selectable

SCORING_COLORS = {"l2": "#1f77b4", "entropy": "#d62728"}
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
        batch_col = f"{metric}_batch_rule"  # the training rule on held-out batches, beside inference
        if batch_col in rows and rows[batch_col].notna().any():
            fig.add_trace(go.Scatter(
                x=rows["l"], y=rows[batch_col], mode="lines+markers", name=f"Sampled ({scoring}), batch rule",
                marker=dict(size=7, symbol="circle-open", color=SCORING_COLORS.get(scoring)),
                line=dict(color=SCORING_COLORS.get(scoring), dash="dot"), customdata=rows[["sae"]].to_numpy(),
                hovertemplate=f"l=%{{x:g}}<br>{batch_col}=%{{y:.4g}}<br>%{{customdata[0]}}<extra>{scoring}</extra>"))
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
    return selectable(fig, f"{y_title} vs l", "l (pool = K·l latents)", y_title, True, log_y)


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
    return selectable(fig, "FVU vs L0 frontier", "L0 (active latents per token)", "FVU", False, False)

def training_curves(curves: pd.DataFrame, metric: str) -> go.Figure:
    """One training-log field against tokens, one line per SAE of a sweep (colour: scoring rule;
    references in their own colours); an unstable run shows as a line that climbs back."""
    from sae_core.training.sweep import TRAINING_CURVES

    y_title, log_y = TRAINING_CURVES[metric]
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
    return selectable(fig, f"{y_title} during training", "training tokens", y_title, False, log_y)
