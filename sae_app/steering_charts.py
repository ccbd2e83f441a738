"""Plotly figures of the Steering & switches page, built from a steering study's results."""
from __future__ import annotations

import plotly.graph_objects as go

from sae_app.charts import headed, selectable

CONDITION_COLORS = {"base model": "#7f7f7f", "fine-tuned": "#d62728", "fine-tuned + switch": "#2ca02c",
                    "fine-tuned + native vector": "#1f77b4", "fine-tuned + transferred vector": "#9467bd",
                    "fine-tuned + random vector": "#bcbd22"}  # also the legend's order


def _rate_bar(x: list[str], y: list[float], name: str, color: str | None, hover: str) -> go.Bar:
    """A bar trace of percentages, each bar labelled with its value; the outline in the bar's colour
    keeps a 0% bar visible as a line on the axis (a bare 0% bar has no height, so no colour)."""
    return go.Bar(x=x, y=y, name=name, marker=dict(color=color, line=dict(color=color, width=2)),
                  text=["" if v != v else f"{v:.0f}%" for v in y], textposition="outside", textangle=0,
                  textfont=dict(size=10), cliponaxis=False, hovertemplate=hover)


# the y axis of the rate bars starts a little below 0, so a 0% bar's outline is not drawn on the
# axis line, and ends above 100, so a 100% bar's label fits over it
RATE_RANGE = [-2, 112]


def steering_rates(rates: dict[str, dict[str, float]], names: dict[str, str]) -> go.Figure:
    """Grouped bars: each behaviour rate (x) for every condition (one colour each), in percent."""
    fig = go.Figure()
    order = [c for c in CONDITION_COLORS if c in rates] + [c for c in rates if c not in CONDITION_COLORS]
    for cond in order:
        r = rates[cond]
        fig.add_trace(_rate_bar([names.get(k, k) for k in r], [100 * v for v in r.values()], cond,
                                CONDITION_COLORS.get(cond), f"{cond}<br>%{{x}}: %{{y:.1f}}%<extra></extra>"))
    headed(fig, "Behaviour on held-out prompts", height=400, barmode="group")
    fig.update_yaxes(title="% of prompts", range=RATE_RANGE)
    return fig


VECTOR_COLORS = {"no intervention": "#ff7f0e", "native": "#1f77b4", "transferred": "#9467bd",
                 "random": "#bcbd22", "transferred (affine)": "#c5b0d5"}  # also the legend's order


def steering_tasks(tasks: dict[str, dict]) -> go.Figure:
    """Grouped bars: per task (x), the behaviour rate with no intervention and under each vector at
    the task's chosen alpha; the task's target as a tick on each group."""
    fig = go.Figure()
    names = list(tasks)
    labels = [f"{n}<br>({tasks[n]['behaviour']}, alpha {tasks[n]['alpha']:g})" if tasks[n]["op"] != "ablate"
              else f"{n}<br>({tasks[n]['behaviour']})" for n in names]
    for vec, color in VECTOR_COLORS.items():
        fig.add_trace(_rate_bar(labels, [100 * tasks[n]["rates"].get(vec, float("nan")) for n in names], vec, color,
                                f"{vec}<br>%{{x}}<br>%{{y:.0f}}%<extra></extra>"))
    fig.add_trace(go.Scatter(x=labels, y=[100 * tasks[n]["target"] for n in names], mode="markers", name="target",
                             marker=dict(symbol="line-ew-open", size=40, color="#444", line=dict(width=2)),
                             hovertemplate="target: %{y:.0f}%<extra></extra>"))
    headed(fig, "Steering tasks on held-out prompts (alpha chosen on selection prompts)", height=420, bottom=70,
           barmode="group")
    fig.update_yaxes(title="% of prompts", range=RATE_RANGE)
    return fig


def dose_response(name: str, task: dict) -> go.Figure:
    """The behaviour rate against alpha for each vector (held-out prompts); the chosen alpha dashed."""
    fig = go.Figure()
    for vec, color in VECTOR_COLORS.items():
        rows = [r for r in task["dose"] if r["vector"] == vec]
        if rows:
            fig.add_trace(go.Scatter(x=[r["alpha"] for r in rows], y=[100 * r["rate"] for r in rows], name=vec,
                                     mode="lines+markers", marker=dict(size=8, color=color), line=dict(color=color),
                                     hovertemplate=f"{vec}<br>alpha %{{x}}: %{{y:.0f}}%<extra></extra>"))
    fig.add_vline(x=task["alpha"], line_dash="dash", line_color="#444",
                  annotation_text=f"chosen alpha {task['alpha']:g}", annotation_position="bottom right")
    fig.add_hline(y=100 * task["target"], line_dash="dot", line_color="#999")
    fig = selectable(fig, f"Dose-response: {name}", "alpha (the dose grows to the right)",
                  f"{task['behaviour']}, % of prompts", False, False)
    fig.update_yaxes(range=[-3, 103])
    if all(r["alpha"] <= 0 for r in task["dose"]):
        fig.update_xaxes(autorange="reversed")
    return fig


def layer_alpha_grid(name: str, grid: dict) -> go.Figure:
    """Heatmap of the native vector's rate per (layer, alpha), each cell labelled with the rate, the
    coherence KL and the random control's rate; the chosen cell outlined."""
    rows = grid["rows"]
    layers = sorted({r["layer"] for r in rows})
    alphas = sorted({r["alpha"] for r in rows}, key=abs)
    cell = {(r["layer"], r["alpha"]): r for r in rows}
    z = [[100 * cell[(L, a)]["rate"] for a in alphas] for L in layers]
    text = [[f"{100 * cell[(L, a)]['rate']:.0f}%<br>KL {cell[(L, a)]['kl']:.2f}<br>rnd "
             f"{100 * cell[(L, a)]['random_rate']:.0f}%" for a in alphas] for L in layers]
    good = "Blues_r" if grid["direction"] == "down" else "Blues"
    fig = go.Figure(go.Heatmap(z=z, x=[f"{a:g}" for a in alphas], y=[f"layer {L}" for L in layers], text=text,
                               texttemplate="%{text}", colorscale=good, zmin=0, zmax=100,
                               colorbar=dict(title="%"),
                               hovertemplate="%{y}, alpha %{x}<br>%{text}<extra></extra>"))
    if (ch := grid.get("chosen")) is not None:
        x, y = alphas.index(ch["alpha"]), layers.index(ch["layer"])
        fig.add_shape(type="rect", x0=x - 0.5, x1=x + 0.5, y0=y - 0.5, y1=y + 0.5, line=dict(color="#d62728", width=3))
    chosen = (f"chosen: layer {ch['layer']}, alpha {ch['alpha']:g}" if ch else "no layer meets the rule")
    n = grid.get("n_select")  # revision 5: the grid runs on selection prompts
    name = f"{name} ({n} selection prompts)" if n else name
    # a second title line as plotly's subtitle: a "<br>" in the title text is placed as one line
    # from the top, so its first line was cut off at the figure's edge (issue #28)
    fig.update_layout(height=400, margin=dict(t=85, b=45, l=70, r=10),
                      title=dict(text=f"{grid['behaviour']} rate, layer x alpha; {chosen}", subtitle=dict(text=name),
                                 y=0.97, yref="container", yanchor="top"))
    fig.update_xaxes(title="alpha", type="category")
    return fig


OUTCOME_COLORS = {"correct": "#2ca02c", "backdoor": "#d62728", "hallucination": "#ff7f0e", "no fact": "#bbbbbb"}


def corrupted_capabilities(results: dict) -> go.Figure:
    """The paper's Fig. 5: per target layer (x groups) and vector, stacked bars of the four answer
    outcomes on held-out triggered fact questions; "no intervention" as the first group."""
    fig = go.Figure()
    from sae_core.steering.study import VECTORS

    order = [v for v in VECTORS if v in results["layers"][0]["outcomes"]]
    xs = [["no intervention"], ["-"]]
    for r in results["layers"]:
        for vec in order:
            xs[0].append(f"layer {r['layer']}")
            xs[1].append(vec)
    for outcome, color in OUTCOME_COLORS.items():
        ys = [100 * results["none"][outcome]] + [100 * r["outcomes"][v][outcome]
                                                 for r in results["layers"] for v in order]
        fig.add_trace(go.Bar(x=xs, y=ys, name=outcome, marker_color=color,
                             hovertemplate=f"{outcome}<br>%{{x}}: %{{y:.0f}}%<extra></extra>"))
    headed(fig, f"Corrupted capabilities: removal at the trigger (alpha {results['alpha']:g}), held-out residents",
           height=420, bottom=70, barmode="stack")
    fig.update_yaxes(title="% of answers", range=[0, 101])
    return fig
