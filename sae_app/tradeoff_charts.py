"""Plotly figures of the Sampled-SAE page's trade-off view: a grid of small panels, one per metric against l,
the Pareto scatter of two metrics with l as colour, and the activation lottery's scatter."""
from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sae_app.charts import selectable
from sae_app.sweep_charts import REFERENCE_STYLE, SCORING_COLORS, hover_data, sae_settings
from sae_core.evaluation.tradeoff import BY_COLUMN

SCORING_SYMBOLS = {"l2": "circle", "l2sq": "triangle-up", "entropy": "x"}
OVERLAY_COLORS = ("#1f77b4", "#ff7f0e")


def _metric_traces(table: pd.DataFrame, column: str, scorings: list[str]) -> tuple[list[go.Scatter], list[float]]:
    """One metric's lines against l: one per scoring rule, BatchTopK and TopK as dashed lines;
    and the sweep's values of l. Points carry their SAE (a click opens it)."""
    traces = []
    sampled = table[(table["arch"] == "sampled") & table["scoring"].isin(scorings)]
    for scoring in scorings:
        rows = sampled[sampled["scoring"] == scoring].dropna(subset=[column]).sort_values("l")
        traces.append(go.Scatter(x=rows["l"], y=rows[column], mode="lines+markers", name=scoring,
                                 marker=dict(size=7, color=SCORING_COLORS.get(scoring)),
                                 line=dict(color=SCORING_COLORS.get(scoring)), customdata=hover_data(rows),
                                 hovertemplate=f"%{{customdata[1]}}<br>{column}=%{{y:.4g}}<extra></extra>"))
    ls = sorted(set(sampled["l"].dropna())) or [1.0]
    for arch, (label, color, _) in REFERENCE_STYLE.items():
        ref = table[table["arch"] == arch]
        if len(ref) and column in ref and ref[column].notna().any():
            y = float(ref[column].iloc[0])
            traces.append(go.Scatter(x=[ls[0], ls[-1]], y=[y, y], mode="lines", name=label,
                                     line=dict(color=color, dash="dash"), customdata=hover_data(ref.iloc[[0, 0]]),
                                     hovertemplate=f"%{{customdata[1]}}<br>{column}=%{{y:.4g}}<extra></extra>"))
    return traces, ls


def metric_title(column: str) -> str:
    """A metric's name with the direction that is better: "FVU (reconstruction) ↓"."""
    m = BY_COLUMN[column]
    return m.title + {"higher": " ↑", "lower": " ↓"}.get(m.better or "", "")


def tradeoff_grid(table: pd.DataFrame, columns: list[str], scorings: list[str], per_row: int = 3) -> go.Figure:
    """Every metric of ``columns`` against l, one small panel each, in one figure: ten separate
    charts made every rerun of the page (and the browser) slower. No legend: in a panel a third
    of the page wide it wrapped over the plot; the page says once which colour is which
    (``grid_legend``)."""
    n_rows = max(1, math.ceil(len(columns) / per_row))
    fig = make_subplots(rows=n_rows, cols=per_row, subplot_titles=[metric_title(c) for c in columns],
                        horizontal_spacing=0.07, vertical_spacing=0.5 / n_rows)
    for i, column in enumerate(columns):
        traces, ls = _metric_traces(table, column, scorings)
        for trace in traces:
            fig.add_trace(trace, row=i // per_row + 1, col=i % per_row + 1)
        fig.update_xaxes(type="log", tickmode="array", tickvals=ls, ticktext=[f"{v:g}" for v in ls],
                         row=i // per_row + 1, col=i % per_row + 1)
    fig.update_annotations(font=dict(size=13))
    return fig.update_layout(height=250 * n_rows, margin=dict(t=40, b=30, l=45, r=10), showlegend=False,
                             hovermode="closest", clickmode="event+select")


def grid_legend(scorings: list[str]) -> str:
    """The grid's one legend, as Streamlit markdown in the lines' colours."""
    names = {"l2": ":blue[l2]", "l2sq": ":violet[l2sq]", "entropy": ":red[entropy]"}
    rules = ", ".join(names.get(s, s) for s in scorings)
    return f"Sampled-SAE lines by scoring rule: {rules}; dashed: :green[BatchTopK], :gray[TopK]. Arrows: better this way."


def pareto(table: pd.DataFrame, x: str, y: str, scorings: list[str]) -> go.Figure:
    """Two metrics against each other, every Sampled-SAE coloured by l (log colour scale; symbol:
    scoring rule) and the references marked: where the trade-off's frontier lies."""
    fig = go.Figure()
    sampled = table[(table["arch"] == "sampled") & table["scoring"].isin(scorings)].dropna(subset=[x, y])
    log_l = [math.log2(v) for v in sampled["l"]]
    ls = sorted(set(sampled["l"]))
    for scoring in scorings:
        rows = sampled[sampled["scoring"] == scoring]
        fig.add_trace(go.Scatter(
            x=rows[x], y=rows[y], mode="markers", name=f"Sampled ({scoring})", customdata=hover_data(rows),
            marker=dict(size=13, symbol=SCORING_SYMBOLS.get(scoring, "circle"), color=[math.log2(v) for v in rows["l"]],
                        colorscale="Viridis", cmin=min(log_l, default=0), cmax=max(log_l, default=1),
                        line=dict(width=1, color="#333"),
                        colorbar=dict(title="l", tickvals=[math.log2(v) for v in ls], ticktext=[f"{v:g}" for v in ls],
                                      x=1.02, len=0.8) if scoring == scorings[0] else None,
                        showscale=scoring == scorings[0]),
            hovertemplate=f"%{{customdata[1]}}<br>{x}=%{{x:.4g}}<br>{y}=%{{y:.4g}}<extra></extra>"))
    for arch, (label, color, symbol) in REFERENCE_STYLE.items():
        ref = table[table["arch"] == arch].dropna(subset=[x, y]) if {x, y} <= set(table) else table.iloc[:0]
        if len(ref):
            fig.add_trace(go.Scatter(x=ref[x], y=ref[y], mode="markers", name=label, customdata=hover_data(ref),
                                     marker=dict(size=14, color=color, symbol=symbol),
                                     hovertemplate=f"%{{customdata[1]}}<br>{x}=%{{x:.4g}}<br>{y}=%{{y:.4g}}<extra></extra>"))
    return selectable(fig, f"{BY_COLUMN[y].title} against {BY_COLUMN[x].title}", BY_COLUMN[x].title,
                      BY_COLUMN[y].title, False, False).update_layout(height=420)


def lottery_scatter(results: list[tuple[str, dict]]) -> go.Figure:
    """Each latent's firing frequency against its mean activation when firing (both log), one
    trace per SAE (two to compare); the lottery's winners (top 1% by magnitude) ringed."""
    fig = go.Figure()
    for (label, r), color in zip(results, OVERLAY_COLORS):
        pts = [(j, f, a) for j, (f, a) in enumerate(zip(r["frequency"], r["mean_when_firing"])) if a is not None and f > 0]
        top = set(r["top_latents"])
        for winners in (False, True):
            sel = [p for p in pts if (p[0] in top) == winners]
            fig.add_trace(go.Scatter(
                x=[p[1] for p in sel], y=[p[2] for p in sel], mode="markers",
                name=f"{label}: top 1% by magnitude" if winners else label,
                marker=dict(size=11 if winners else 6, color=color, opacity=1.0 if winners else 0.55,
                            symbol="circle-open" if winners else "circle", line=dict(width=2 if winners else 0)),
                customdata=[[p[0]] for p in sel],
                hovertemplate="latent %{customdata[0]}<br>fires on %{x:.3%} of tokens<br>"
                              "mean when firing %{y:.3g}<extra>" + label + "</extra>"))
    selectable(fig, "The activation lottery: how often each latent fires against how strongly",
               "firing frequency (share of tokens, log)", "mean activation when firing (log)", True, True)
    return fig.update_layout(height=460)


def lottery_table(results: list[tuple[str, dict]]) -> pd.DataFrame:
    """The lottery's scalars per SAE shown."""
    return pd.DataFrame([{"SAE": label, "rule": r["rule"],
                          "slots won by the top 1% (its rule)": r["top_share"],
                          "... under plain BatchTopK": r["top_share_batchtopk"],
                          "kept entries BatchTopK keeps too": r["winners_overlap"],
                          "latents that fire": sum(1 for a in r["mean_when_firing"] if a is not None),
                          "tokens": r["n_tokens"]} for label, r in results])


def sae_choices(table: pd.DataFrame) -> dict[str, str]:
    """SAE artifact -> its settings, in the table's order, for pickers."""
    return {row["sae"]: sae_settings(row) for row in table.to_dict("records")}
