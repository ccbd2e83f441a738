"""Plotly figures of the feature browser: activation and logit histograms, the feature map."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from sae_app.charts import axis_type


def _bar(edges: list[float], counts: list[int], color, title: str, x_title: str, log_y: bool = False) -> go.Figure:
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    fig = go.Figure(go.Bar(x=centres, y=counts, width=widths, marker_color=color,
                           customdata=list(zip(edges[:-1], edges[1:])),
                           hovertemplate="[%{customdata[0]:.3g}, %{customdata[1]:.3g}): %{y}<extra></extra>"))
    fig.update_layout(title=title, height=250, margin=dict(t=40, b=40, l=50, r=10), bargap=0.02)
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title="count", **axis_type(log_y))
    return fig


def activation_histogram(edges: list[float], counts: list[int]) -> go.Figure:
    """Histogram of a feature's nonzero activations over the index's tokens."""
    return _bar(edges, counts, "rgb(255,122,0)", "Nonzero activations", "activation")


def logit_histogram(edges: list[float], counts: list[int]) -> go.Figure:
    """Histogram of a feature's direct logit effects over the vocabulary (red < 0 < blue)."""
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    colors = ["#d62728" if c < 0 else "#1f77b4" for c in centres]
    return _bar(edges, counts, colors, "Logit effects over the vocabulary", "W_dec · W_U", log_y=True)


def feature_map(overview: pd.DataFrame, selected: int | None = None, live_only: bool = False) -> go.Figure:
    """UMAP of decoder rows (one point per feature), coloured by log10 density; WebGL for 16k+ points.
    Features that never fired (no density to take a log of) are grey and say so; ``live_only``
    leaves them out."""
    live = overview[overview["density"] > 0]
    dead = overview[overview["density"] <= 0].iloc[:0 if live_only else None]
    fig = go.Figure()
    fig.add_trace(go.Scattergl(
        x=live["x"], y=live["y"], mode="markers", name="features",
        marker=dict(size=5, color=live["log10_density"], colorscale="Viridis", showscale=True,
                    colorbar=dict(title="log10 density")),
        customdata=live[["feature", "log10_density", "top_tokens"]].to_numpy(),
        hovertemplate="feature %{customdata[0]}<br>log10 density %{customdata[1]:.2f}<br>"
                      "%{customdata[2]}<extra></extra>"))
    if len(dead):
        fig.add_trace(go.Scattergl(
            x=dead["x"], y=dead["y"], mode="markers", name="never fired", marker=dict(size=4, color="#bbbbbb"),
            customdata=dead[["feature"]].to_numpy(), hovertemplate="feature %{customdata[0]}: never fired<extra></extra>"))
    if selected is not None and selected in (overview if not live_only else live).index:
        row = overview.loc[selected]
        fig.add_trace(go.Scattergl(x=[row["x"]], y=[row["y"]], mode="markers", name=f"feature {selected}",
                                   marker=dict(size=14, color="rgba(0,0,0,0)", line=dict(width=2, color="red")),
                                   hoverinfo="skip"))
    fig.update_layout(height=520, margin=dict(t=30, b=10, l=10, r=10), clickmode="event+select",
                      legend=dict(orientation="h", y=1.02, x=0, yanchor="bottom"), dragmode="pan")
    fig.update_xaxes(showticklabels=False, title=None)
    fig.update_yaxes(showticklabels=False, title=None)
    return fig


def drivers_graph(components: list[tuple[str, float]], feature: int, hook_layer: int) -> go.Figure:
    """What drives a feature as a small graph: each component at (layer, head; MLPs above the heads),
    an arrow into the feature's node, width by |attribution|, orange where it raises the feature and
    blue where it lowers it. ``components``: (node, attribution), the ones to draw."""
    fig = go.Figure()
    biggest = max((abs(a) for _, a in components), default=1.0) or 1.0
    fx, fy = hook_layer + 1, -1.0

    def place(node: str) -> tuple[float, float]:
        layer = int(node[1:].split(".")[0])
        return (layer, float(node.split(".h")[1])) if node.startswith("a") else (layer + 0.35, -1.0)
    for node, a in components:
        x, y = place(node)
        fig.add_trace(go.Scatter(x=[x, fx], y=[y, fy], mode="lines", hoverinfo="skip", showlegend=False,
                                 line=dict(width=1 + 7 * abs(a) / biggest,
                                           color="rgba(255,122,0,0.55)" if a > 0 else "rgba(31,119,180,0.55)")))
    xs, ys = zip(*(place(n) for n, _ in components)) if components else ((), ())
    fig.add_trace(go.Scatter(
        x=list(xs), y=list(ys), mode="markers+text", text=[n for n, _ in components], textposition="top center",
        customdata=[[n, a] for n, a in components], name="components",
        marker=dict(size=[10 + 16 * abs(a) / biggest for _, a in components],
                    color=["rgb(255,122,0)" if a > 0 else "rgb(31,119,180)" for _, a in components]),
        hovertemplate="%{customdata[0]}: attribution %{customdata[1]:+.3g}<extra></extra>", showlegend=False))
    fig.add_trace(go.Scatter(x=[fx], y=[fy], mode="markers+text", text=[f"feature {feature}"], textposition="middle right",
                             marker=dict(size=18, symbol="diamond", color="black"), hoverinfo="skip", showlegend=False))
    fig.update_layout(title=f"What drives feature {feature}: heads and MLPs by attribution", height=320,
                      margin=dict(t=40, b=40, l=50, r=90))
    fig.update_xaxes(title="layer", dtick=1, range=[-0.5, fx + 0.8])
    fig.update_yaxes(title="head (MLPs below)", dtick=1, zeroline=False)
    return fig
