"""The Circuits page's figures (issue #28): full titles with room above the plot, legends below it,
union colours named in words, and edges that pass no node but their own two ends."""
import math
import re

import numpy as np
import pytest

from sae_app import circuits_charts as charts
from sae_core.circuits.graph import CircuitGraph, Edge, GraphConfig, all_edges, senders

VALIDATION = {"edges": [f"a0.h{h}->logits" for h in range(8)], "attribution": [0.1, 0.5, -0.2, 0.3, 0.05, 0.4, 0.0, 0.2],
              "exact": [0.12, 0.45, -0.25, 0.2, 0.07, 0.5, 0.01, 0.15], "spearman": 0.8690476}
CLEARANCE = 0.2  # data units (about 20 px at the page's scale): a marker's radius and a thick edge's half-width


def _graph(parallel: bool) -> CircuitGraph:
    cfg = GraphConfig(n_layers=4, n_heads=8, parallel_attn_mlp=parallel, d_model=256)  # zoo:tiny-b, the demo's
    names = [e.name for e in all_edges(cfg)]
    return CircuitGraph(cfg, {n: (i % 7 - 3) / 10 or 0.05 for i, n in enumerate(names)})


def _figures() -> dict[str, object]:
    g = _graph(True)
    edges = set(list(g.scores)[::9])
    membership = {"a0.h1": ["digits", "months"], "m2": ["months"], "a3.h4": ["digits", "months", "number_words"]}
    tasks = ["digits", "months", "number_words"]
    return {
        "graph": charts.circuit_graph(g, edges, ["a0.h1", "m2"], {}),
        "union": charts.circuit_graph(g, edges, sorted(membership), {}, membership, tasks),
        "heatmap": charts.matrix_heatmap([[1, 0.5], [0.5, 1]], ["digits", "months"], ["digits", "months"],
                                         "Circuit (row) on task (column), %", "{:.0f}", 0, 100, "RdYlGn"),
        "attention": charts.attention_heatmap(np.eye(4) * 0.5, ["a", "b", "c", "d"], "a1.h2"),
        "size": charts.size_curve([{"size": 5, "performance": 80.0, "threshold": 20.0, "random_performance": [10, 20]},
                                   {"size": 9, "performance": 95.0, "threshold": 10.0, "random_performance": [30]}],
                                  9, 95.0),
        "validation": charts.validation_scatter(VALIDATION),
        "ov": charts.ov_bars([{"head": "a1.h2", "next_score": 0.8, "copy_score": 0.1}]),
    }


def test_the_validation_title_shows_the_whole_number_on_lines_that_fit():
    fig = charts.validation_scatter(VALIDATION)
    text = fig.layout.title.text
    assert text.replace("<br>", " ") == "Attribution vs exact patching on the top 8 edges: Spearman rho = 0.87"
    lines = text.split("<br>")
    assert len(lines) == 2  # too long for half the page on one line: it was clipped at "rho = ("
    assert all(20 + charts.TITLE_PX_PER_CHAR * len(line) <= charts.HALF for line in lines)
    assert fig.layout.margin.t >= 20 + charts.LINE_PX * len(lines)


@pytest.mark.parametrize("name", list(_figures()))
def test_every_circuits_figure_keeps_title_and_legend_apart(name):
    fig = _figures()[name]
    title, legend, margin = fig.layout.title, fig.layout.legend, fig.layout.margin
    n_lines = title.text.count("<br>") + 1
    # the title stands on the plot, in a top margin that holds all its lines (and plotly may widen)
    assert (title.yref, title.y, title.yanchor, title.automargin) == ("paper", 1, "bottom", True)
    assert margin.t >= 20 + charts.LINE_PX * n_lines
    assert title.pad.b >= 8 + charts.TITLE_LINE_PX * (n_lines - 1)  # its lower lines clear the plot
    # the legend sits on the figure's bottom edge, inside a bottom margin that holds its rows and the axis
    assert (legend.yref, legend.yanchor, legend.orientation) == ("container", "bottom", "h")
    assert 0 < legend.y * fig.layout.height <= 10
    assert margin.b >= 35 + charts.LINE_PX * charts.legend_rows(fig, charts.FULL if name in ("graph", "union", "ov",
                                                                                             "attention") else
                                                                  charts.HALF if name in ("size", "validation")
                                                                  else charts.THIRD)
    assert charts.legend_rows(_figures()["union"], charts.FULL) >= 2  # (a legend of many entries is counted)


def test_the_union_view_names_its_colours_in_words():
    names = [t.name for t in _figures()["union"].data if t.mode == "markers" and t.name != "components"]
    assert names == ["input / logits", "shared by every task", "shared by digits and months", "months only",
                     "in no task's circuit"]
    nodes = next(t for t in _figures()["union"].data if t.name == "components")
    colour = dict(zip(nodes.customdata, nodes.marker.color))
    legend = {t.name: t.marker.color for t in _figures()["union"].data if t.mode == "markers"}
    assert colour["m2"] == legend["months only"] == charts.TASK_COLORS[1]
    assert colour["a0.h1"] == legend["shared by digits and months"]
    assert colour["a3.h4"] == legend["shared by every task"] and colour["a2.h2"] == "white"
    assert not any(re.search(r"#[0-9a-f]{6}", t.name or "") for t in _figures()["union"].data)


def _distance(p, a, b) -> float:
    """Distance from point ``p`` to the segment ``a``-``b``."""
    p, a, b = map(np.asarray, (p, a, b))
    t = np.clip(np.dot(p - a, b - a) / max(np.dot(b - a, b - a), 1e-12), 0, 1)
    return float(np.linalg.norm(p - (a + t * (b - a))))


def _distances(points_N2, path_S2) -> np.ndarray:
    """[N]: each point's distance to the polyline ``path`` (``_distance`` over every segment, at once)."""
    a, b = path_S2[:-1], path_S2[1:]                                           # [S-1, 2] each
    ab, ap = b - a, points_N2[:, None, :] - a[None]                             # [S-1, 2], [N, S-1, 2]
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)  # [N, S-1]
    return np.linalg.norm(ap - t[..., None] * ab, axis=-1).min(axis=1)


def test_the_vectorised_distance_is_the_segment_distance():
    rng = np.random.default_rng(0)
    points, path = rng.normal(size=(7, 2)), rng.normal(size=(5, 2))
    want = [min(_distance(p, a, b) for a, b in zip(path, path[1:])) for p in points]
    assert np.allclose(_distances(points, path), want)


@pytest.mark.parametrize("parallel", [True, False])  # the demo's GPT-NeoX, and a sequential model (same-row edges)
def test_no_edge_passes_a_node_other_than_its_ends(parallel):
    g = _graph(parallel)
    where = {n: charts.node_xy(g, n) for n in senders(g.cfg) + ["logits"]}
    names = list(where)
    xy_N2 = np.array([where[n] for n in names], dtype=float)
    for name in g.scores:  # every edge the graph can draw
        e = Edge.parse(name)
        path = charts.edge_path(g, name)
        assert path[0] == where[e.sender] and path[-1] == where[e.receiver]
        closest = _distances(xy_N2, np.array(path, dtype=float))
        for n, d in zip(names, closest):
            if n not in (e.sender, e.receiver):
                assert d >= CLEARANCE, f"{name} passes {d:.2f} from {n}"


def test_a_straight_edge_would_cross_a_node():
    # the test above can fail: the old straight line from input to logits ran through a layer's head
    g = _graph(True)
    a, b = charts.node_xy(g, "input"), charts.node_xy(g, "logits")
    assert min(_distance(charts.node_xy(g, f"a{l}.h4"), a, b) for l in range(4)) < CLEARANCE
    assert math.isclose(charts.node_xy(g, "a0.h4")[0], a[0])


def test_the_drawn_graph_follows_the_edge_paths():
    g = _graph(True)
    edge = "input->a3.h4<q>"
    fig = charts.circuit_graph(g, {edge}, [], {})
    [line] = [t for t in fig.data if t.mode == "lines"]
    assert list(zip(line.x[:-1], line.y[:-1])) == charts.edge_path(g, edge) and line.x[-1] is None
