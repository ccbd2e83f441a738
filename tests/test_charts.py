"""The app's figures show the table's numbers (read back from the plotly figure)."""
import pandas as pd

from sae_app import charts


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
    fig = charts.sweep_vs_l(_table(), "fvu", ["l2", "entropy"])
    by_name = {t.name: t for t in fig.data}
    l2 = by_name["Sampled (l2)"]
    assert list(l2.x) == [1.0, 2.0, 4.0]
    assert list(l2.y) == [0.5, 0.25, 0.125]
    assert [c[0] for c in l2.customdata] == ["l2-1.0", "l2-2.0", "l2-4.0"]
    assert list(by_name["BatchTopK"].y) == [0.1, 0.1] and list(by_name["TopK"].y) == [0.12, 0.12]
    assert list(by_name["BatchTopK"].x) == [1.0, 4.0]
    assert fig.layout.xaxis.type == "log"


def test_only_chosen_scorings_are_drawn():
    fig = charts.sweep_vs_l(_table(), "fvu", ["entropy"])
    assert [t.name for t in fig.data] == ["Sampled (entropy)", "BatchTopK", "TopK"]


def test_frontier_marks_references():
    fig = charts.sweep_frontier(_table(), ["l2"])
    names = [t.name for t in fig.data]
    assert names == ["Sampled (l2)", "BatchTopK", "TopK"]
    btk = fig.data[1]
    assert list(btk.x) == [4.0] and list(btk.y) == [0.1]
