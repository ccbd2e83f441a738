"""The layout every chart module of the app shares (one chart module per subsystem: ``sweep_charts``,
``feature_charts``, ``steering_charts``, ``activations_charts``, ``universality_charts``,
``circuits_charts``; each builds its figures from result tables and is tested directly)."""
from __future__ import annotations

import plotly.graph_objects as go

# the title on its own line at the top, the legend on the line below it: a long title and a
# three-entry legend on one line overlapped
LEGEND_UNDER_TITLE = dict(orientation="h", y=1.01, x=1, xanchor="right", yanchor="bottom")


def headed(fig: go.Figure, title: str, height: int = 360, bottom: int = 45, **layout) -> go.Figure:
    """The title at the top and the legend under it, ``layout`` (e.g. ``barmode``) besides."""
    fig.update_layout(title=dict(text=title, y=0.98, yanchor="top"), height=height,
                      margin=dict(t=75, b=bottom, l=55, r=10), legend=LEGEND_UNDER_TITLE, **layout)
    return fig


def titled(fig: go.Figure, title: str, x_title: str = "", y_title: str = "", height: int = 360) -> go.Figure:
    """The pages' usual layout: the title on its own line at the top, a horizontal legend below it."""
    headed(fig, title, height)
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title)
    return fig


def selectable(fig: go.Figure, title: str, x_title: str, y_title: str, log_x: bool, log_y: bool) -> go.Figure:
    """``titled``, with points to click (they select an SAE) and each axis linear or log."""
    headed(fig, title, hovermode="closest", clickmode="event+select")
    fig.update_xaxes(title=x_title, **axis_type(log_x))
    fig.update_yaxes(title=y_title, **axis_type(log_y))
    return fig


def axis_type(log: bool) -> dict:
    """Log axes label their 2s and 5s in full ("20", not a small "2" after "10")."""
    return dict(type="log", minorloglabels="complete") if log else dict(type="linear")
