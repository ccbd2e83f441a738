"""The Sampled-SAE page (issue #28): refused sweeps, SAEs named by their settings, the dead-latents
note, and training curves that follow the scoring filter."""
import json

import pytest

from tests.helpers import app_test, page_errors, small_sweep


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
    shown = at.dataframe[1].value.set_index("sae")
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
