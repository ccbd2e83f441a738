"""Plotly figures of the Circuits page, built from a circuits study (tested directly).

The circuit graph: layers as horizontal bands (input at the bottom, logits at the top), heads
left to right within their layer and the MLP at the right end; an edge's width grows with its
|score|, its colour tells the sign (red: ablating it hurts the task, blue: it helps) and, in
shade, the channel it enters (q, k, v of a head; MLP or logits).
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from sae_app.charts import titled as _layout
from sae_core.circuits.graph import CircuitGraph, Edge, senders

EDGE_COLORS = {("-", "q"): "#d62728", ("-", "k"): "#ff7f0e", ("-", "v"): "#8c564b", ("-", None): "#e377c2",
               ("+", "q"): "#1f77b4", ("+", "k"): "#17becf", ("+", "v"): "#2ca02c", ("+", None): "#9467bd"}
CHANNEL_NAMES = {"q": "query", "k": "key", "v": "value", None: "MLP / logits"}
TASK_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
WIDTH_BINS = 4


def node_xy(graph: CircuitGraph, name: str) -> tuple[float, float]:
    n_l, n_h = graph.cfg.n_layers, graph.cfg.n_heads
    if name == "input":
        return (n_h / 2, -1.0)
    if name == "logits":
        return (n_h / 2, float(n_l))
    layer = int(name[1:].split(".")[0])
    return (float(n_h) + 0.4, float(layer)) if name.startswith("m") else (float(name.split(".h")[1]), float(layer))


def circuit_graph(graph: CircuitGraph, edges: set[str], nodes: list[str], node_text: dict[str, str],
                  membership: dict[str, list[str]] | None = None, tasks: list[str] | None = None,
                  selected: str | None = None) -> go.Figure:
    """``edges`` drawn over every component; ``nodes`` (the circuit) filled, the rest hollow. With
    ``membership`` the nodes are coloured by which of ``tasks`` use them (the union view)."""
    n_l, n_h = graph.cfg.n_layers, graph.cfg.n_heads
    fig = go.Figure()
    for layer in range(n_l):
        fig.add_shape(type="rect", x0=-0.6, x1=n_h + 1.0, y0=layer - 0.42, y1=layer + 0.42, line_width=0,
                      fillcolor="rgba(120,120,120,0.08)" if layer % 2 == 0 else "rgba(120,120,120,0.03)", layer="below")
    mags = [abs(graph.scores[e]) for e in edges]
    top = max(mags, default=1.0) or 1.0
    groups: dict[tuple, list[str]] = {}
    for name in edges:
        e = Edge.parse(name)
        sign = "-" if graph.scores[name] < 0 else "+"
        width = 1 + min(int(WIDTH_BINS * abs(graph.scores[name]) / top), WIDTH_BINS - 1)
        groups.setdefault((sign, e.channel, width), []).append(name)
    seen = set()
    for (sign, channel, width), names in sorted(groups.items(), key=lambda kv: kv[0][2]):
        xs, ys = [], []
        for name in names:
            e = Edge.parse(name)
            (x0, y0), (x1, y1) = node_xy(graph, e.sender), node_xy(graph, e.receiver)
            xs += [x0, x1, None]
            ys += [y0, y1, None]
        label = f"{'hurts' if sign == '-' else 'helps'} when ablated: {CHANNEL_NAMES[channel]}"
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=EDGE_COLORS[(sign, channel)],
                                                                       width=1.2 * width ** 1.6),
                                 opacity=0.75, name=label, legendgroup=label, showlegend=label not in seen,
                                 hoverinfo="skip"))
        seen.add(label)
    everything = senders(graph.cfg) + ["logits"]
    in_c = set(nodes) | {"input", "logits"}
    colors, symbols, sizes, lines = [], [], [], []
    for n in everything:
        if membership is not None and tasks:
            users = membership.get(n, [])
            colors.append(TASK_COLORS[tasks.index(users[0]) % len(TASK_COLORS)] if len(users) == 1 else
                          ("#111111" if len(users) == len(tasks) else "#7f7f7f") if users else "white")
        else:
            colors.append("#444444" if n in ("input", "logits") else ("#ffbf00" if n in in_c else "white"))
        symbols.append("square" if n.startswith("m") or n in ("input", "logits") else "circle")
        sizes.append(22 if n == selected else 16)
        lines.append(3 if n == selected else 1)
    xy = np.array([node_xy(graph, n) for n in everything])
    fig.add_trace(go.Scatter(x=xy[:, 0].tolist(), y=xy[:, 1].tolist(), mode="markers+text", text=everything,
                             textposition="top center", textfont=dict(size=9), customdata=everything,
                             hovertext=[node_text.get(n, n) for n in everything], hoverinfo="text",
                             marker=dict(color=colors, symbol=symbols, size=sizes,
                                         line=dict(color="#222222", width=lines)), name="components",
                             unselected=dict(marker=dict(opacity=1.0)), showlegend=False))  # a click dims nothing
    fig.update_yaxes(tickvals=list(range(-1, n_l + 1)), ticktext=["input"] + [f"layer {l}" for l in range(n_l)]
                     + ["logits"], range=[-1.6, n_l + 0.6], showgrid=False, zeroline=False)
    fig.update_xaxes(tickvals=list(range(n_h)) + [n_h + 0.4], ticktext=[f"h{h}" for h in range(n_h)] + ["MLP"],
                     showgrid=False, zeroline=False)
    return _layout(fig, f"{len(edges)} edges, {len(nodes)} components in the circuit", height=150 + 95 * (n_l + 2))


def matrix_heatmap(matrix: list[list[float]], rows: list[str], cols: list[str], title: str, fmt: str,
                   zmin: float, zmax: float, colorscale: str = "Blues") -> go.Figure:
    z = np.asarray(matrix, dtype=float)
    fig = go.Figure(go.Heatmap(z=z.tolist(), x=cols, y=rows, zmin=zmin, zmax=zmax, colorscale=colorscale,
                               text=[[fmt.format(v) for v in row] for row in z.tolist()], texttemplate="%{text}",
                               hovertemplate="%{y} / %{x}: %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, height=320)


def attention_heatmap(pattern_QK: np.ndarray, tokens: list[str], head: str) -> go.Figure:
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    fig = go.Figure(go.Heatmap(z=np.asarray(pattern_QK).tolist(), x=labels, y=labels, zmin=0, zmax=1,
                               colorscale="Viridis", hovertemplate="query %{y} -> key %{x}: %{z:.2f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, f"{head}: attention (query x key)", "key", "query", height=430)


def size_curve(curve: list[dict], found_size: int, found_perf: float) -> go.Figure:
    """Performance against circuit size: found circuits, and the band of random ones of each size."""
    fig = go.Figure()
    pts = sorted(curve, key=lambda p: p["size"])
    for p in pts:
        r = p["random_performance"]
        if r:
            fig.add_trace(go.Box(x=[p["size"]] * len(r), y=r, name="random circuits", marker_color="#7f7f7f",
                                 showlegend=p is pts[0], boxpoints="all", width=0.6))
    fig.add_trace(go.Scatter(x=[p["size"] for p in pts], y=[p["performance"] for p in pts], mode="lines+markers+text",
                             text=[f"T={p['threshold']:g}" for p in pts], textposition="top left",
                             name="found (pruning at T)", marker=dict(color="#d62728", size=9)))
    fig.add_trace(go.Scatter(x=[found_size], y=[found_perf], mode="markers", name="this circuit",
                             marker=dict(color="#ffbf00", size=15, symbol="star", line=dict(color="#222", width=1))))
    fig.add_hline(y=100, line_dash="dot", line_color="#999")
    return _layout(fig, "Faithfulness: performance against circuit size", "components kept", "performance (%)")


def validation_scatter(validation: dict) -> go.Figure:
    a, x = validation["attribution"], validation["exact"]
    lim = [min(a + x) * 1.1, max(a + x + [0]) * 1.1]
    fig = go.Figure(go.Scatter(x=a, y=x, mode="markers", text=validation["edges"], marker=dict(size=8),
                               hovertemplate="%{text}<br>attribution %{x:.3f}<br>exact %{y:.3f}<extra></extra>",
                               name="edges"))
    fig.add_trace(go.Scatter(x=lim, y=lim, mode="lines", line=dict(dash="dot", color="#999"), name="y = x"))
    return _layout(fig, f"Attribution vs exact path patching (top {len(a)} edges): Spearman rho = "
                        f"{validation['spearman']:.3f}", "attribution score (LD change)", "exact patching (LD change)")


def ov_bars(ov: list[dict], top: int = 12) -> go.Figure:
    rows = ov[:top]
    heads = [r["head"] for r in rows]
    fig = go.Figure([go.Bar(x=heads, y=[r["next_score"] for r in rows], name="next score", marker_color="#2ca02c"),
                     go.Bar(x=heads, y=[r["copy_score"] for r in rows], name="copy score", marker_color="#7f7f7f")])
    fig.update_layout(barmode="group")
    return _layout(fig, "Successor heads: OV next / copy scores (top 5)", "head", "fraction of members")


def circuit_svg(graph: CircuitGraph, edges: set[str], nodes: list[str], title: str) -> str:
    """The circuit graph as a standalone SVG (same layout and colours as ``circuit_graph``)."""
    from html import escape

    n_l, n_h = graph.cfg.n_layers, graph.cfg.n_heads
    sx, sy, pad = 70.0, 90.0, 50.0
    width, height = (n_h + 1.4) * sx + 2 * pad, (n_l + 1) * sy + 2 * pad + 30

    def at(name: str) -> tuple[float, float]:
        x, y = node_xy(graph, name)
        return pad + (x + 0.5) * sx, height - pad - (y + 1) * sy

    top = max((abs(graph.scores[e]) for e in edges), default=1.0) or 1.0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'font-family="sans-serif" font-size="11">', '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{pad}" y="24" font-size="14">{escape(title)}</text>']
    for name in sorted(edges, key=lambda e: abs(graph.scores[e])):
        e = Edge.parse(name)
        (x0, y0), (x1, y1) = at(e.sender), at(e.receiver)
        color = EDGE_COLORS[("-" if graph.scores[name] < 0 else "+", e.channel)]
        out.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="{color}" '
                   f'stroke-opacity="0.75" stroke-width="{1 + 5 * abs(graph.scores[name]) / top:.2f}">'
                   f'<title>{escape(name)}: {graph.scores[name]:+.4f}</title></line>')
    in_c = set(nodes)
    everything = senders(graph.cfg) + ["logits"]
    for n in everything:
        x, y = at(n)
        fill = "#444444" if n in ("input", "logits") else ("#ffbf00" if n in in_c else "white")
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="8" fill="{fill}" stroke="#222"/>'
                   f'<text x="{x:.1f}" y="{y - 12:.1f}" text-anchor="middle">{escape(n)}</text>')
    return "\n".join(out + ["</svg>"])
