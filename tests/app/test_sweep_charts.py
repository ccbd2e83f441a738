"""The Sampled-SAE page's figures (issue #28): l ticks, clean log ticks, frontier labels that do not
overlap when every L0 is near K, a training-curves legend beside the plot, the scoring filter."""
import pandas as pd

from sae_app import sweep_charts

# the demo sweep's numbers (K=16, d_sae=512): every L0 is within 1.2 of K
L0 = {"l2": [15.6649, 15.9937, 16.0016, 15.9836, 16.0197], "entropy": [14.8072, 15.9428, 15.9234, 15.9907, 16.0046]}
FVU = {"l2": [0.131730, 0.065812, 0.042730, 0.030466, 0.021140],
       "entropy": [0.364095, 0.082431, 0.044916, 0.032513, 0.023014]}
DISTINCT = {"l2": [16, 32, 64, 128, 256], "entropy": [16, 32, 64, 128, 255]}


def _demo_table() -> pd.DataFrame:
    rows = [{"arch": "sampled", "scoring": s, "l": l, "k": 16, "d_sae": 512, "l0": L0[s][i], "fvu": FVU[s][i],
             "distinct_latents_per_batch": DISTINCT[s][i], "sae": f"sae-{s}-{l:g}"}
            for s in ("l2", "entropy") for i, l in enumerate((1.0, 2.0, 4.0, 8.0, 16.0))]
    rows += [{"arch": "batchtopk", "scoring": None, "l": None, "k": 16, "d_sae": 512, "l0": 16.1182,
              "fvu": 0.015048, "distinct_latents_per_batch": 457, "sae": "sae-btk"},
             {"arch": "topk", "scoring": None, "l": None, "k": 16, "d_sae": 512, "l0": 16.0, "fvu": 0.012123,
              "distinct_latents_per_batch": 505, "sae": "sae-tk"}]
    return pd.DataFrame(rows)


def test_l_axis_ticks_are_the_sweeps_l_values_and_log_ticks_are_clean():
    fig = sweep_charts.sweep_vs_l(_demo_table(), "distinct_latents_per_batch", ["l2", "entropy"])
    # plotly's own ticks on this short log range were 0.9, 1, 2, ..., 9, 10 (no 16)
    assert fig.layout.xaxis.tickvals == (1.0, 2.0, 4.0, 8.0, 16.0)
    assert fig.layout.xaxis.ticktext == ("1", "2", "4", "8", "16")
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.yaxis.tickvals == (20.0, 50.0, 100.0, 200.0, 500.0)  # data 16..505
    assert sweep_charts.log_ticks([1, 16]) == [1.0, 2.0, 5.0, 10.0]  # never 0.9 beside 1
    assert sweep_charts.log_ticks([0.003, 50]) == [0.01, 0.1, 1.0, 10.0]  # too many 1-2-5 steps: decades


def test_points_are_named_by_their_settings():
    fig = sweep_charts.sweep_vs_l(_demo_table(), "fvu", ["entropy"])
    by_name = {t.name: t for t in fig.data}
    assert [list(c) for c in by_name["Sampled (entropy)"].customdata[:2]] == [
        ["sae-entropy-1", "sampled, entropy, l=1"], ["sae-entropy-2", "sampled, entropy, l=2"]]
    assert [c[1] for c in by_name["BatchTopK"].customdata] == ["batchtopk", "batchtopk"]
    assert by_name["TopK"].hovertemplate.startswith("%{customdata[1]}")
    front = sweep_charts.sweep_frontier(_demo_table(), ["l2"])
    assert [c[1] for c in front.data[0].customdata] == [f"sampled, l2, l={v}" for v in (1, 2, 4, 8, 16)]


def test_frontier_labels_stay_apart_when_every_l0_is_near_k():
    fig = sweep_charts.sweep_frontier(_demo_table(), ["l2", "entropy"])
    l2, entropy = fig.data[0], fig.data[1]
    assert l2.text == ("l=1", "l=2", "l=4", "l=8", "l=16")
    # the two rules' l=4 points sit 0.08 apart in L0: one line labels to the left, the other to the right
    assert (l2.textposition, entropy.textposition) == ("middle left", "middle right")
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.tickvals == (0.02, 0.05, 0.1, 0.2)
    # two points at one spot get one label: "l=8, 16" on the first, none on the second
    close = _demo_table()
    close.loc[(close["scoring"] == "l2") & (close["l"] == 16.0), ["l0", "fvu"]] = [15.99, 0.0300]
    assert sweep_charts.sweep_frontier(close, ["l2"]).data[0].text == ("l=1", "l=2", "l=4", "l=8, 16", "")


def _curves() -> pd.DataFrame:
    rows = []
    for label, scoring in [(f"sampled l={l} {s}", s) for s in ("l2", "entropy") for l in (1, 2, 4, 8, 16)] + [
            ("batchtopk", None), ("topk", None)]:
        rows += [{"sae": label, "label": label, "scoring": scoring, "tokens": t, "sq_err": 100.0 / (1 + t)}
                 for t in (0, 1024, 2048)]
    return pd.DataFrame(rows)


def test_training_curves_legend_stands_beside_the_plot_and_follows_the_scoring_filter():
    fig = sweep_charts.training_curves(_curves(), "sq_err")
    legend = fig.layout.legend
    # above the plot, 12 entries wrapped onto the title; beside it, the plot keeps the top
    assert (legend.orientation, legend.x, legend.xanchor, legend.y, legend.yanchor) == ("v", 1.02, "left", 1, "top")
    assert fig.layout.height == 110 + 21 * 12  # the whole column shows, no scrolling legend
    assert fig.layout.yaxis.tickvals == (0.1, 1.0, 10.0, 100.0)  # 0.049..100: decades
    only_l2 = sweep_charts.training_curves(_curves(), "sq_err", ["l2"])
    assert [t.name for t in only_l2.data] == [f"sampled l={l} l2" for l in (1, 2, 4, 8, 16)] + ["batchtopk", "topk"]
    assert [t.name for t in sweep_charts.training_curves(_curves(), "sq_err", []).data] == ["batchtopk", "topk"]
