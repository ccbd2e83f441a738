"""Plotly figures of the Circuits page, built from a circuits study (tested directly).

The circuit graph: layers as horizontal bands (input at the bottom, logits at the top), heads
left to right within their layer and the MLP at the right end; an edge's width grows with its
|score|, its colour tells the sign (red: ablating it hurts the task, blue: it helps) and, in
shade, the channel it enters (q, k, v of a head; MLP or logits). Edges are drawn as curves that
leave and enter nodes vertically and cross a layer's band only in a gap between its nodes, so an
edge never runs through a component it does not connect (``edge_path``).

Every figure has its title on top, wrapped to the chart's width (a long title was clipped), and its
legend below the plot, where neither can overlap the other (``_framed``).
"""
from __future__ import annotations

import textwrap

import numpy as np
import plotly.graph_objects as go

from sae_core.circuits.graph import CircuitGraph, Edge, senders

EDGE_COLORS = {("-", "q"): "#d62728", ("-", "k"): "#ff7f0e", ("-", "v"): "#8c564b", ("-", None): "#e377c2",
               ("+", "q"): "#1f77b4", ("+", "k"): "#17becf", ("+", "v"): "#2ca02c", ("+", None): "#9467bd"}
CHANNEL_NAMES = {"q": "query", "k": "key", "v": "value", None: "MLP / logits"}
TASK_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
WIDTH_BINS = 4
CURVE_POINTS = 16  # samples per curve between two rows (smooth at any zoom the page offers)
# the width in pixels a chart gets on the page: the whole main column, or half of it, or a third
FULL, HALF, THIRD = 1050, 480, 310
TITLE_PX_PER_CHAR, LEGEND_PX_PER_CHAR = 9.0, 7.0
LINE_PX = 24  # one line of title or of legend, in the margins
TITLE_LINE_PX = 22  # a title line as plotly sets it (the Streamlit theme's 16 px font)


def wrap_title(title: str, width_px: int) -> str:
    """``title`` with ``<br>`` between words wherever a line would run past ``width_px``."""
    return "<br>".join(textwrap.wrap(title, max(20, int((width_px - 20) / TITLE_PX_PER_CHAR)),
                                     break_long_words=False, break_on_hyphens=False))


def legend_rows(fig: go.Figure, width_px: int) -> int:
    """How many rows the horizontal legend of ``fig`` takes at ``width_px`` (an estimate on the
    generous side: plotly puts as many entries on a row as fit)."""
    names, seen = [], set()
    for t in fig.data:
        if t.showlegend is not False and t.name and (t.legendgroup or t.name) not in seen:
            seen.add(t.legendgroup or t.name)
            names.append(t.name)
    rows, used = (1 if names else 0), 0.0
    for name in names:
        w = 40 + LEGEND_PX_PER_CHAR * len(name)
        if used and used + w > width_px - 20:
            rows, used = rows + 1, 0.0
        used += w
    return rows


def _framed(fig: go.Figure, title: str, x_title: str = "", y_title: str = "", height: int = 360,
            width_px: int = FULL) -> go.Figure:
    """The title wrapped, above the plot with room for its lines; the legend pinned to the figure's
    bottom edge (``yref="container"``: no tick labels or axis title can push it into the plot),
    below a bottom margin that holds the axis and the legend's rows."""
    text = wrap_title(title, width_px)
    top = 20 + LINE_PX * (text.count("<br>") + 1) + TITLE_LINE_PX * text.count("<br>")
    bottom = (55 if x_title else 35) + LINE_PX * legend_rows(fig, width_px)
    # the title stands on the plot (automargin: plotly makes room above it; hung from the top with
    # yanchor "top", a two-line title lost its first line's top), from the figure's left edge (a
    # third-width chart's plot starts after its tick labels). Plotly anchors a multi-line title by its
    # first line: the pad lifts the lines below it off the plot.
    fig.update_layout(title=dict(text=text, x=0, xanchor="left", xref="container", y=1,
                                 pad=dict(l=8, b=8 + TITLE_LINE_PX * text.count("<br>")),
                                 yanchor="bottom", yref="paper", automargin=True),
                      height=height, margin=dict(t=top, b=bottom, l=60, r=10),
                      legend=dict(orientation="h", x=0, xanchor="left", xref="paper", y=4 / height, yanchor="bottom",
                                  yref="container"))
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title)
    return fig


def node_xy(graph: CircuitGraph, name: str) -> tuple[float, float]:
    n_l, n_h = graph.cfg.n_layers, graph.cfg.n_heads
    if name == "input":
        return (n_h / 2, -1.0)
    if name == "logits":
        return (n_h / 2, float(n_l))
    layer = int(name[1:].split(".")[0])
    return (float(n_h) + 0.4, float(layer)) if name.startswith("m") else (float(name.split(".h")[1]), float(layer))


def _gaps(graph: CircuitGraph) -> list[float]:
    """The x positions between a layer's nodes (and beside them) where an edge may cross its row."""
    n_h = graph.cfg.n_heads
    mlp = node_xy(graph, "m0")[0]
    return [h - 0.5 for h in range(n_h)] + [(n_h - 1 + mlp) / 2, mlp + 0.5]


def _bezier(p0, p1, p2, p3) -> list[tuple[float, float]]:
    """A cubic Bezier curve sampled at ``CURVE_POINTS`` points (``p0`` itself left out)."""
    t = np.linspace(0, 1, CURVE_POINTS + 1)[1:, None]
    pts = ((1 - t) ** 3 * np.array(p0) + 3 * (1 - t) ** 2 * t * np.array(p1) + 3 * (1 - t) * t ** 2 * np.array(p2)
           + t ** 3 * np.array(p3))
    return [(float(x), float(y)) for x, y in pts]


def _curve(a: tuple[float, float], b: tuple[float, float]) -> list[tuple[float, float]]:
    """From ``a`` up to ``b`` on a later row, leaving ``a`` and entering ``b`` vertically: beside a
    node the curve rises before it turns, so it clears the node's neighbours on the row."""
    rise = 0.5 * (b[1] - a[1])
    return _bezier(a, (a[0], a[1] + rise), (b[0], b[1] - rise), b)


def edge_path(graph: CircuitGraph, name: str) -> list[tuple[float, float]]:
    """The points of edge ``name``'s curve, sender to receiver: through a gap of every layer row it
    crosses (the gap nearest the straight line), vertical where it meets a row, so it passes no node
    but its two ends. An edge within one row (a sequential model's head -> its layer's MLP) arches
    above the row."""
    e = Edge.parse(name)
    a, b = node_xy(graph, e.sender), node_xy(graph, e.receiver)
    if a[1] == b[1]:
        return [a] + _bezier(a, (a[0], a[1] + 0.45), (b[0], b[1] + 0.45), b)
    gaps = _gaps(graph)
    stops = [a]
    for row in range(int(a[1]) + 1, int(b[1])):
        x = a[0] + (b[0] - a[0]) * (row - a[1]) / (b[1] - a[1])
        stops.append((min(gaps, key=lambda g: abs(g - x)), float(row)))
    stops.append(b)
    points = [a]
    for p, q in zip(stops, stops[1:]):
        points += _curve(p, q)
    return points


def node_groups(graph: CircuitGraph, nodes: list[str], membership: dict[str, list[str]] | None = None,
                tasks: list[str] | None = None) -> list[tuple[str, str, list[str]]]:
    """``(legend label, colour, components)`` per kind of node, in words: in the circuit or not,
    or (with ``membership``, the union view) which of ``tasks`` use it."""
    everything = senders(graph.cfg) + ["logits"]
    ends = ["input", "logits"]
    if membership is None or not tasks:
        in_c = set(nodes)
        return [g for g in [("input / logits", "#444444", ends),
                            ("in the circuit", "#ffbf00", [n for n in everything if n in in_c and n not in ends]),
                            ("not in the circuit", "white", [n for n in everything if n not in in_c and n not in ends])]
                if g[2]]
    by_users: dict[tuple[str, ...], list[str]] = {}
    for n in everything:
        if n not in ends:
            by_users.setdefault(tuple(t for t in tasks if t in membership.get(n, [])), []).append(n)
    groups = [("input / logits", "#444444", ends)]
    shades = iter(["#7f7f7f", "#b0b0b0", "#5a5a5a", "#cfcfcf", "#999999"])
    for users, names in sorted(by_users.items(), key=lambda kv: (-len(kv[0]) if kv[0] else 1, kv[0])):
        if not users:
            groups.append(("in no task's circuit", "white", names))
        elif len(users) == 1:
            groups.append((f"{users[0]} only", TASK_COLORS[tasks.index(users[0]) % len(TASK_COLORS)], names))
        elif len(users) == len(tasks):
            groups.append(("shared by every task" if len(tasks) > 2 else f"shared by {' and '.join(users)}",
                           "#111111", names))
        else:
            groups.append((f"shared by {', '.join(users[:-1])} and {users[-1]}", next(shades, "#7f7f7f"), names))
    return groups


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
        for name in sorted(names):
            path = edge_path(graph, name)
            xs += [float(x) for x, _ in path] + [None]
            ys += [float(y) for _, y in path] + [None]
        label = f"{'hurts' if sign == '-' else 'helps'} when ablated: {CHANNEL_NAMES[channel]}"
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=EDGE_COLORS[(sign, channel)],
                                                                       width=1.2 * width ** 1.6),
                                 opacity=0.75, name=label, legendgroup=label, showlegend=label not in seen,
                                 hoverinfo="skip"))
        seen.add(label)
    color_of, symbol = {}, (lambda n: "square" if n.startswith("m") or n in ("input", "logits") else "circle")
    for label, color, names in node_groups(graph, nodes, membership, tasks):
        color_of |= {n: color for n in names}
        # the legend's entry only: the nodes themselves are one trace (below), in ``senders`` order
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label, hoverinfo="skip",
                                 marker=dict(color=color, size=12, symbol=symbol(names[0]),
                                             line=dict(color="#222222", width=1))))
    everything = senders(graph.cfg) + ["logits"]
    xy = np.array([node_xy(graph, n) for n in everything])
    fig.add_trace(go.Scatter(x=xy[:, 0].tolist(), y=xy[:, 1].tolist(), mode="markers+text", text=everything,
                             textposition="top center", textfont=dict(size=9), customdata=everything,
                             hovertext=[node_text.get(n, n) for n in everything], hoverinfo="text",
                             marker=dict(color=[color_of[n] for n in everything], symbol=list(map(symbol, everything)),
                                         size=[22 if n == selected else 16 for n in everything],
                                         line=dict(color="#222222", width=[3 if n == selected else 1 for n in everything])),
                             name="components", unselected=dict(marker=dict(opacity=1.0)),  # a click dims nothing
                             showlegend=False))
    fig.update_yaxes(tickvals=list(range(-1, n_l + 1)), ticktext=["input"] + [f"layer {l}" for l in range(n_l)]
                     + ["logits"], range=[-1.6, n_l + 0.6], showgrid=False, zeroline=False)
    fig.update_xaxes(tickvals=list(range(n_h)) + [n_h + 0.4], ticktext=[f"h{h}" for h in range(n_h)] + ["MLP"],
                     showgrid=False, zeroline=False)
    title = f"{len(edges)} edges, {len(nodes)} components in the circuit"
    if membership is not None:
        title = f"{len(edges)} edges of {', '.join(tasks or [])}; components coloured by the tasks whose circuits use them"
    # the legend's rows add to the height: the plot keeps its own
    return _framed(fig, title, height=150 + 95 * (n_l + 2) + LINE_PX * legend_rows(fig, FULL))


def matrix_heatmap(matrix: list[list[float]], rows: list[str], cols: list[str], title: str, fmt: str,
                   zmin: float, zmax: float, colorscale: str = "Blues") -> go.Figure:
    z = np.asarray(matrix, dtype=float)
    fig = go.Figure(go.Heatmap(z=z.tolist(), x=cols, y=rows, zmin=zmin, zmax=zmax, colorscale=colorscale,
                               text=[[fmt.format(v) for v in row] for row in z.tolist()], texttemplate="%{text}",
                               hovertemplate="%{y} / %{x}: %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return _framed(fig, title, height=320, width_px=THIRD)


def attention_heatmap(pattern_QK: np.ndarray, tokens: list[str], head: str) -> go.Figure:
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    fig = go.Figure(go.Heatmap(z=np.asarray(pattern_QK).tolist(), x=labels, y=labels, zmin=0, zmax=1,
                               colorscale="Viridis", hovertemplate="query %{y} -> key %{x}: %{z:.2f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return _framed(fig, f"{head}: attention (query x key)", "key", "query", height=430)


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
    return _framed(fig, "Faithfulness: performance against circuit size", "components kept", "performance (%)",
                   height=400, width_px=HALF)


def validation_scatter(validation: dict) -> go.Figure:
    a, x = validation["attribution"], validation["exact"]
    lim = [min(a + x) * 1.1, max(a + x + [0]) * 1.1]
    fig = go.Figure(go.Scatter(x=a, y=x, mode="markers", text=validation["edges"], marker=dict(size=8),
                               hovertemplate="%{text}<br>attribution %{x:.3f}<br>exact %{y:.3f}<extra></extra>",
                               name="edges"))
    fig.add_trace(go.Scatter(x=lim, y=lim, mode="lines", line=dict(dash="dot", color="#999"), name="y = x"))
    return _framed(fig, validation_title(validation), "attribution score (LD change)", "exact patching (LD change)",
                   height=400, width_px=HALF)


def validation_title(validation: dict) -> str:
    return (f"Attribution vs exact patching on the top {len(validation['edges'])} edges: Spearman rho = "
            f"{validation['spearman']:.2f}")


def ov_bars(ov: list[dict], top: int = 12) -> go.Figure:
    rows = ov[:top]
    heads = [r["head"] for r in rows]
    fig = go.Figure([go.Bar(x=heads, y=[r["next_score"] for r in rows], name="next score", marker_color="#2ca02c"),
                     go.Bar(x=heads, y=[r["copy_score"] for r in rows], name="copy score", marker_color="#7f7f7f")])
    fig.update_layout(barmode="group")
    return _framed(fig, "Successor heads: OV next / copy scores (top 5)", "head", "fraction of members")


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
        color = EDGE_COLORS[("-" if graph.scores[name] < 0 else "+", e.channel)]
        points = " ".join(f"{pad + (x + 0.5) * sx:.1f},{height - pad - (y + 1) * sy:.1f}"
                          for x, y in edge_path(graph, name))
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-opacity="0.75" '
                   f'stroke-width="{1 + 5 * abs(graph.scores[name]) / top:.2f}">'
                   f'<title>{escape(name)}: {graph.scores[name]:+.4f}</title></polyline>')
    in_c = set(nodes)
    everything = senders(graph.cfg) + ["logits"]
    for n in everything:
        x, y = at(n)
        fill = "#444444" if n in ("input", "logits") else ("#ffbf00" if n in in_c else "white")
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="8" fill="{fill}" stroke="#222"/>'
                   f'<text x="{x:.1f}" y="{y - 12:.1f}" text-anchor="middle">{escape(n)}</text>')
    return "\n".join(out + ["</svg>"])


def logit_lens(rows: list[dict], task: str, mode: str) -> go.Figure:
    """The answer's mean probability and the top-1 share after the embedding and each block."""
    x = [r["state"] for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=[100 * r["p_answer"] for r in rows], name="p(answer), mean", mode="lines+markers",
                             hovertemplate="%{x}: p(answer) %{y:.1f}%<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=[100 * r["top1"] for r in rows], name="answer is top-1", mode="lines+markers",
                             line=dict(dash="dot"), hovertemplate="%{x}: top-1 on %{y:.0f}%<extra></extra>"))
    reading = "the authors' reading (raw states)" if mode == "paper" else "through the final norm"
    fig.update_layout(height=340, margin=dict(t=60, b=40, l=60, r=10),
                      title=dict(text=f"Logit lens: {task}", subtitle=dict(text=reading), y=0.97, yref="container",
                                 yanchor="top"),
                      legend=dict(orientation="h", yanchor="bottom", y=-0.35, x=0))
    fig.update_yaxes(title="% of prompts / mean %", range=[-5, 105])
    return fig
