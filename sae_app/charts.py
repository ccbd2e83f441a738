"""Plotly figures of the app, built from result tables (tested directly, not through the page)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

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


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, log_x: bool, log_y: bool) -> go.Figure:
    # the title on its own line at the top, the legend on the line below it: a long title and a
    # three-entry legend on one line overlapped
    fig.update_layout(title=dict(text=title, y=0.98, yanchor="top"), height=360,
                      margin=dict(t=75, b=45, l=55, r=10),
                      legend=dict(orientation="h", y=1.01, x=1, xanchor="right", yanchor="bottom"),
                      hovermode="closest", clickmode="event+select")
    fig.update_xaxes(title=x_title, **_axis_type(log_x))
    fig.update_yaxes(title=y_title, **_axis_type(log_y))
    return fig


def titled(fig: go.Figure, title: str, x_title: str = "", y_title: str = "", height: int = 360) -> go.Figure:
    """The pages' usual layout: the title on its own line at the top, a horizontal legend below it."""
    fig.update_layout(title=dict(text=title, y=0.98, yanchor="top"), height=height,
                      margin=dict(t=75, b=45, l=55, r=10),
                      legend=dict(orientation="h", y=1.01, x=1, xanchor="right", yanchor="bottom"))
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title)
    return fig


def _axis_type(log: bool) -> dict:
    """Log axes label their 2s and 5s in full ("20", not a small "2" after "10")."""
    return dict(type="log", minorloglabels="complete") if log else dict(type="linear")


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


# --- feature browser -------------------------------------------------------------------------------

def _bar(edges: list[float], counts: list[int], color, title: str, x_title: str, log_y: bool = False) -> go.Figure:
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    fig = go.Figure(go.Bar(x=centres, y=counts, width=widths, marker_color=color,
                           customdata=list(zip(edges[:-1], edges[1:])),
                           hovertemplate="[%{customdata[0]:.3g}, %{customdata[1]:.3g}): %{y}<extra></extra>"))
    fig.update_layout(title=title, height=250, margin=dict(t=40, b=40, l=50, r=10), bargap=0.02)
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title="count", **_axis_type(log_y))
    return fig


def activation_histogram(edges: list[float], counts: list[int]) -> go.Figure:
    """Histogram of a feature's nonzero activations over the index's tokens."""
    return _bar(edges, counts, "rgb(255,122,0)", "Nonzero activations", "activation")


def logit_histogram(edges: list[float], counts: list[int]) -> go.Figure:
    """Histogram of a feature's direct logit effects over the vocabulary (red < 0 < blue)."""
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    colors = ["#d62728" if c < 0 else "#1f77b4" for c in centres]
    return _bar(edges, counts, colors, "Logit effects over the vocabulary", "W_dec · W_U", log_y=True)


def feature_map(overview: pd.DataFrame, selected: int | None = None) -> go.Figure:
    """UMAP of decoder rows (one point per feature), coloured by log10 density; WebGL for 16k+ points."""
    live = overview[overview["density"] > 0]
    dead = overview[overview["density"] <= 0]
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
            x=dead["x"], y=dead["y"], mode="markers", name="never active", marker=dict(size=4, color="#bbbbbb"),
            customdata=dead[["feature", "log10_density", "top_tokens"]].to_numpy(),
            hovertemplate="feature %{customdata[0]} (never active)<extra></extra>"))
    if selected is not None and selected in overview.index:
        row = overview.loc[selected]
        fig.add_trace(go.Scattergl(x=[row["x"]], y=[row["y"]], mode="markers", name=f"feature {selected}",
                                   marker=dict(size=14, color="rgba(0,0,0,0)", line=dict(width=2, color="red")),
                                   hoverinfo="skip"))
    fig.update_layout(height=520, margin=dict(t=30, b=10, l=10, r=10), clickmode="event+select",
                      legend=dict(orientation="h", y=1.02, x=0, yanchor="bottom"), dragmode="pan")
    fig.update_xaxes(showticklabels=False, title=None)
    fig.update_yaxes(showticklabels=False, title=None)
    return fig


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
    return _layout(fig, f"{y_title} during training", "training tokens", y_title, False, log_y)


CONDITION_COLORS = {"base model": "#7f7f7f", "fine-tuned": "#d62728", "fine-tuned + switch": "#2ca02c",
                    "fine-tuned + native vector": "#1f77b4", "fine-tuned + transferred vector": "#9467bd",
                    "fine-tuned + random vector": "#bcbd22"}  # also the legend's order


def steering_rates(rates: dict[str, dict[str, float]], names: dict[str, str]) -> go.Figure:
    """Grouped bars: each behaviour rate (x) for every condition (one colour each), in percent."""
    fig = go.Figure()
    order = [c for c in CONDITION_COLORS if c in rates] + [c for c in rates if c not in CONDITION_COLORS]
    for cond in order:
        r = rates[cond]
        fig.add_trace(go.Bar(x=[names.get(k, k) for k in r], y=[100 * v for v in r.values()], name=cond,
                             marker_color=CONDITION_COLORS.get(cond),
                             hovertemplate=f"{cond}<br>%{{x}}: %{{y:.1f}}%<extra></extra>"))
    fig.update_layout(barmode="group", height=400, margin=dict(t=75, b=45, l=55, r=10),
                      title=dict(text="Behaviour on held-out prompts", y=0.98, yanchor="top"),
                      legend=dict(orientation="h", y=1.01, x=1, xanchor="right", yanchor="bottom"))
    fig.update_yaxes(title="% of prompts", range=[0, 105])
    return fig


VECTOR_COLORS = {"no intervention": "#ff7f0e", "native": "#1f77b4", "transferred": "#9467bd",
                 "random": "#bcbd22"}  # also the legend's order


def steering_tasks(tasks: dict[str, dict]) -> go.Figure:
    """Grouped bars: per task (x), the behaviour rate with no intervention and under each vector at
    the task's chosen alpha; the task's target as a tick on each group."""
    fig = go.Figure()
    names = list(tasks)
    labels = [f"{n}<br>({tasks[n]['behaviour']}, alpha {tasks[n]['alpha']:g})" if tasks[n]["op"] != "ablate"
              else f"{n}<br>({tasks[n]['behaviour']})" for n in names]
    for vec, color in VECTOR_COLORS.items():
        fig.add_trace(go.Bar(x=labels, y=[100 * tasks[n]["rates"].get(vec, float("nan")) for n in names],
                             name=vec, marker_color=color,
                             hovertemplate=f"{vec}<br>%{{x}}<br>%{{y:.0f}}%<extra></extra>"))
    fig.add_trace(go.Scatter(x=labels, y=[100 * tasks[n]["target"] for n in names], mode="markers", name="target",
                             marker=dict(symbol="line-ew-open", size=40, color="#444", line=dict(width=2)),
                             hovertemplate="target: %{y:.0f}%<extra></extra>"))
    fig.update_layout(barmode="group", height=420, margin=dict(t=75, b=70, l=55, r=10),
                      title=dict(text="Steering tasks on held-out prompts (alpha chosen on selection prompts)",
                                 y=0.98, yanchor="top"),
                      legend=dict(orientation="h", y=1.01, x=1, xanchor="right", yanchor="bottom"))
    fig.update_yaxes(title="% of prompts", range=[0, 105])
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
    fig = _layout(fig, f"Dose-response: {name}", "alpha (the dose grows to the right)",
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
    fig.update_layout(height=380, margin=dict(t=75, b=45, l=70, r=10),
                      title=dict(text=f"{grid['behaviour']} rate, layer x alpha<br><sup>{name}; {chosen}</sup>",
                                 y=0.98, yanchor="top"))
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
    fig.update_layout(barmode="stack", height=420, margin=dict(t=75, b=70, l=55, r=10),
                      title=dict(text=f"Corrupted capabilities: removal at the trigger (alpha {results['alpha']:g}), "
                                      "held-out residents", y=0.98, yanchor="top"),
                      legend=dict(orientation="h", y=1.01, x=1, xanchor="right", yanchor="bottom"))
    fig.update_yaxes(title="% of answers", range=[0, 101])
    return fig
