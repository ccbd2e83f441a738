"""The Sampled-SAE page (issue #28): refused sweeps, SAEs named by their settings, the dead-latents
note, and training curves that follow the scoring filter."""
import json

import pytest

from tests.helpers import app_test, page_errors, plotly_values, small_sweep


def _sweep_page():
    at = app_test().run()
    at.switch_page("views/sampled_sae.py").run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("k,d_sae,ls,says", [
    (16, 512, [1, 64], "K·l = 16·64 = 1024 exceeds d_sae = 512: the pool would hold every latent and the run "
                       "would be plain BatchTopK; lower l or raise d_sae"),
    (600, 512, [1], "k=600 must be between 1 and d_sae=512; lower k or widen the SAE")])
def test_a_sweep_wider_than_the_sae_is_refused_before_any_work(workspace, k, d_sae, ls, says):
    at = _sweep_page()
    at.number_input(key="sw_k").set_value(k)
    at.number_input(key="sw_d_sae").set_value(d_sae)
    at.multiselect(key="sw_ls").set_value(ls)
    at.button(key="sw_run").click().run()
    assert not at.exception, at.exception
    assert says in page_errors(at)
    assert not at.status  # no job was started ...
    assert workspace.list("activations") == []  # ... and nothing harvested
    # the user's inputs are kept, to correct one of them
    assert (at.number_input(key="sw_k").value, at.number_input(key="sw_d_sae").value) == (k, d_sae)
    assert at.multiselect(key="sw_ls").value == ls


def test_sweep_saes_are_named_by_their_settings_and_the_pool_explains_dead_latents(workspace):
    from sae_core.training.sweep import load_sweep_table

    sweep = small_sweep(workspace)  # K=4, d_sae=64, l=1 and 4, l2; BatchTopK and TopK
    expected = load_sweep_table(sweep)
    at = _sweep_page()
    assert not page_errors(at), page_errors(at)
    # the sweep picker: settings first, the artifact in a caption
    assert at.selectbox(key="sw_sweep").value == sweep.name
    assert at.selectbox(key="sw_sweep").options == ["K=4, d_sae=64, l=1,4, l2 (4 SAEs)"]
    assert f"Sweep artifact `{sweep.name}`" in [c.value for c in at.caption]
    # chart hover names every point by its settings (the artifact stays in customdata[0] for a click)
    fvu = json.loads(at.get("plotly_chart")[0].proto.spec)
    hover = {t["name"]: [c[1] for c in t["customdata"]] for t in fvu["data"]}
    assert hover["Sampled (l2)"] == ["sampled, l2, l=1", "sampled, l2, l=4"]
    assert hover["BatchTopK"] == ["batchtopk"] * 2 and hover["TopK"] == ["topk"] * 2
    assert all("%{customdata[1]}" in t["hovertemplate"] for t in fvu["data"])
    # the dead fraction of a Sampled-SAE comes with its reason: a pool of K·l latents per batch
    # the Method panel: the trainer against dictionary_learning's, read from the sweep's stored config
    from sae_core.io import read_json
    from sae_core.training.config import TrainerConfig
    stored = read_json(sweep.path / "sweep.json")
    method = at.dataframe[0].value
    trainer = TrainerConfig(total_tokens=stored["tokens"], batch_size=stored["batch_size"])
    assert method.loc["optimiser and lr", "this sweep"] == (f"Adam, lr 2e-4 / sqrt(d_sae / 2^14) = "
                                                              f"{trainer.lr_for(64):.3g} at d_sae 64")
    assert method.loc["schedule", "this sweep"].startswith(f"{trainer.warmup_steps} warm-up steps of {trainer.steps};")
    assert method.loc["gradient clipping", "this sweep"].startswith("global norm 1 ")
    assert method.loc["mode", "this sweep"] == "no paper mode: the Sampled-SAE authors' code is not public"
    assert "score each latent over the batch (l2)" in method.loc["Sampled-SAE pool", "this sweep"]
    shown = at.dataframe[-1].value.set_index("sae")  # the last: every SAE of the sweep
    for row in expected.itertuples():
        note = shown.loc[row.sae, "dead_note"]
        if row.arch == "sampled":
            assert shown.loc[row.sae, "dead_fraction"] == pytest.approx(row.dead_fraction)
            assert note == f"by design: at most K·l = 4·{row.l:g} = {int(4 * row.l)} of 64 latents can fire per batch"
        else:
            assert note is None or note != note  # references have no pool
    l1 = expected[expected["l"] == 1.0].iloc[0]
    assert (f"Never active on eval: a Sampled-SAE's share is by design, not a failed run. At most K·l distinct "
            f"latents can fire per batch, so l=1 (4 of 64 latents) leaves {l1.dead_fraction:.1%} never active "
            "(column \"why so many never fire\").") in [c.value for c in at.caption]


def test_training_curves_follow_the_scoring_filter(workspace):
    small_sweep(workspace)
    at = _sweep_page()

    def curve_names():
        return sorted(t["name"] for t in json.loads(at.get("plotly_chart")[-1].proto.spec)["data"])

    assert curve_names() == ["batchtopk", "sampled l=1 l2", "sampled l=4 l2", "topk"]
    at.segmented_control(key="sw_show").set_value([]).run()  # l2 unticked: only the references
    assert not at.exception, at.exception
    assert curve_names() == ["batchtopk", "topk"]


def _chart(at, title_start):
    """The spec of the page's plotly chart whose title starts with ``title_start``."""
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    titles = [s["layout"].get("title", {}).get("text", "") for s in specs]  # the grid has panel titles only
    found = [s for s, t in zip(specs, titles) if t.startswith(title_start)]
    assert found, f"{title_start!r} not among {titles}"
    return found[0]


def _panel(at, title):
    """The traces of the trade-off grid's panel titled ``title``."""
    grid = _chart_with_annotation(at, title)
    i = [a["text"] for a in grid["layout"]["annotations"]].index(title)
    return [t for t in grid["data"] if t.get("xaxis", "x") == ("x" if i == 0 else f"x{i + 1}")]


def _chart_with_annotation(at, text):
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    found = [s for s in specs if text in [a.get("text") for a in s["layout"].get("annotations", [])]]
    assert len(found) == 1, text
    return found[0]


def test_the_tradeoff_view_after_evaluating_from_the_page(workspace, monkeypatch):
    """An unevaluated sweep offers the evaluation; after it, a chart per metric with the numbers of
    the table, the verdict the table supports, the Pareto scatter and the lottery."""
    from sae_core.demo.steps import small_evaluation_config
    from sae_core.evaluation.tradeoff import best_l, verdict
    from sae_core.training.sweep import load_sweep_table

    sweep = small_sweep(workspace)
    at = _sweep_page()
    assert any("has no probing, absorption, lottery yet" in i.value for i in at.info)
    assert not any(s["layout"].get("annotations") or s["layout"]["title"]["text"].startswith("sparse probing")
                   for s in (json.loads(c.proto.spec) for c in at.get("plotly_chart")))  # no trade-off view yet
    # the page's button evaluates every SAE (here at the small demo's sizes, not the defaults)
    from sae_app import sweep_cache
    monkeypatch.setattr(sweep_cache, "evaluation_config", small_evaluation_config)
    at.button(key="sw_eval").click().run()
    assert not at.exception and not page_errors(at), (at.exception, page_errors(at))
    table = load_sweep_table(sweep)
    probe = _panel(at, "sparse probing, k = 1 (test accuracy) ↑")
    line = next(t for t in probe if t["name"] == "l2")
    assert plotly_values(line["y"]) == list(table[table["arch"] == "sampled"].sort_values("l")["probe_sae_top_1"])
    refs = {t["name"]: plotly_values(t["y"])[0] for t in probe if t["name"] in ("BatchTopK", "TopK")}
    assert refs == {"BatchTopK": table.loc[table["arch"] == "batchtopk", "probe_sae_top_1"].iloc[0],
                    "TopK": table.loc[table["arch"] == "topk", "probe_sae_top_1"].iloc[0]}
    for title in ("FVU (reconstruction) ↓", "feature absorption rate ↓", "never active on eval (dead) ↓",
                  "shared structure: pairwise overlap ↑", "L0 (active latents per token)"):
        assert _panel(at, title)  # one panel of the one grid figure each
    assert f"**{verdict(best_l(table, ['l2']))}**" in [m.value for m in at.markdown]
    best = at.dataframe[1].value.set_index("metric")
    assert best.loc["sparse probing, k = 1 (test accuracy)", "best Sampled-SAE"] == best_l(table)[
        [b["column"] for b in best_l(table)].index("probe_sae_top_1")]["best"]
    # the Pareto scatter: probing against L0 first, then any two metrics; l as colour
    pareto = _chart(at, "sparse probing, k = 1 (test accuracy) against L0")
    assert [t["name"] for t in pareto["data"]] == ["Sampled (l2)", "BatchTopK", "TopK"]
    assert plotly_values(pareto["data"][0]["marker"]["color"]) == [0.0, 2.0]  # log2 l: l=1 and l=4
    at.selectbox(key="sw_par_y").set_value("absorption_rate").run()
    pareto = _chart(at, "feature absorption rate against L0")
    assert plotly_values(pareto["data"][0]["y"]) == list(
        table[table["arch"] == "sampled"].sort_values("l")["absorption_rate"])
    # the lottery of the first SAE, then a second overlaid
    lot = _chart(at, "The activation lottery")
    from sae_core.evaluation.config import EvaluationConfig
    from sae_core.evaluation.job import load_evaluation
    first = workspace.get("sae", at.selectbox(key="sw_lot_a").value)
    stored = load_evaluation(workspace, first, "lottery", EvaluationConfig())
    fired = sum(1 for f, a in zip(stored["frequency"], stored["mean_when_firing"]) if a is not None and f > 0)
    assert sum(len(plotly_values(t["x"])) for t in lot["data"]) == fired
    at.selectbox(key="sw_lot_b").set_value(at.selectbox(key="sw_lot_b").options[1]).run()
    lot = _chart(at, "The activation lottery")
    assert len({t["marker"]["color"] for t in lot["data"]}) == 2
    numbers = at.dataframe[2].value
    assert len(numbers) == 2 and numbers["slots won by the top 1% (its rule)"].iloc[0] == stored["top_share"]
