"""Plotly figures of the Activations page, built from a store's summary (``StoreSummary``)."""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

MARGIN = dict(t=50, b=40, l=40, r=10)


def norm_histogram(centers: Sequence[float], counts: Sequence[int]) -> go.Figure:
    """Tokens per bin of their activation's L2 norm (bars at the bins' centres)."""
    fig = go.Figure(go.Bar(x=centers, y=counts, marker_line_width=0))
    fig.update_layout(title="Activation norm per token", xaxis_title="L2 norm", yaxis_title="tokens",
                      bargap=0, height=360, margin=MARGIN)
    return fig


def dimension_stats(mean_D: Sequence[float], std_D: Sequence[float]) -> go.Figure:
    """The mean and the std of each dimension of the activation, one line each."""
    fig = go.Figure([go.Scatter(y=mean_D, name="mean", mode="lines"),
                     go.Scatter(y=std_D, name="std", mode="lines")])
    fig.update_layout(title="Mean and std per dimension", xaxis_title="dimension", height=360, margin=MARGIN,
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    return fig
