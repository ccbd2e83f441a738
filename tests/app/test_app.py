"""Page tests through Streamlit's AppTest: the app runs headless, in this process."""
from __future__ import annotations

import json

from sae_core.models.zoo import list_zoo
from tests.helpers import app_test, page_errors, small_sweep


def _built_zoo_model() -> str:
    """The sidebar's default model: the zoo's first model, which is committed (never missing)."""
    first = list_zoo()[0]
    assert first.built, f"{first.name} is not built; run `sae-core zoo build`"
    return first.name


def test_home_lists_zoo_and_artifacts(workspace):
    with workspace.create("activations", "fake-store", model="zoo:tiny-a",
                          hook="blocks.1.hook_resid_post", meta={"n_tokens": 1234, "d": 128}) as d:
        (d / "data.bin").write_bytes(b"")
    at = app_test().run()
    assert not at.exception
    zoo_frame, artifact_frame = at.dataframe[0].value, at.dataframe[1].value
    assert set(zoo_frame["model"]) == {e.name for e in list_zoo()}
    row = artifact_frame.set_index("name").loc["fake-store"]
    assert (row["kind"], row["model"], row["hook"]) == ("activations", "zoo:tiny-a", "blocks.1.hook_resid_post")
    assert "n_tokens=1,234" in row["details"]
    links = [link.label for link in at.get("page_link")]
    # every page is linked, none announced as "(coming)" (issue #28: Universality and Circuits exist)
    assert links == ["Sampled-SAE", "Feature browser", "Steering & switches", "Universality", "Circuits",
                     "Activations"]
    assert not any("coming" in m.value for m in at.markdown)
    assert any("Where to start" in i.value for i in at.info)


def test_home_empty_workspace_says_what_to_do(workspace):
    at = app_test().run()
    assert not at.exception
    assert any("This workspace has no demo yet" in i.value for i in at.info)
    assert at.button(key="demo_start").label == "Build the demo workspace"
    assert any("is empty: build the demo above" in i.value for i in at.info)


def test_home_summarises_the_selected_model(workspace):
    name = _built_zoo_model()
    at = app_test().run()
    assert not at.exception and not page_errors(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["layers"].isdigit() and int(metrics["d_model"]) > 0
    assert at.sidebar.selectbox(key="sb_zoo_model").value == name
    assert at.sidebar.selectbox(key=f"sb_hook::{name}").value.endswith("hook_resid_post")


def test_bad_model_name_shows_error(workspace):
    at = app_test().run()
    at.sidebar.text_input(key="sb_model_text").set_value("no-such-model-xyz").run()
    assert not at.exception
    assert any("no-such-model-xyz" in e for e in page_errors(at)), page_errors(at)
    at.switch_page("views/activations.py").run()
    assert not at.exception
    assert any("no-such-model-xyz" in e for e in page_errors(at))
    assert at.button(key="act_harvest").disabled


def test_bad_workspace_shows_error(workspace, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    at = app_test().run()
    for bad in (blocker, blocker / "sub"):  # a file, and a path that runs through a file
        at.sidebar.text_input(key="sb_workspace").set_value(str(bad)).run()
        assert not at.exception
        assert any("not writable" in e and str(bad) in e for e in page_errors(at)), page_errors(at)
    at.switch_page("views/activations.py").run()
    assert not at.exception
    assert any("not writable" in e for e in page_errors(at))
    assert at.button(key="act_harvest").disabled


def test_an_emptied_workspace_field_uses_the_default_not_the_current_directory(workspace, tmp_path,
                                                                                monkeypatch):
    # it used to open "." and write a registry.sqlite into whatever directory the app ran in
    monkeypatch.chdir(tmp_path)
    at = app_test().run()
    at.sidebar.text_input(key="sb_workspace").set_value("").run()
    assert not at.exception and not page_errors(at)
    assert f"Using `{workspace.root}`" in [c.value for c in at.sidebar.caption]
    assert not (tmp_path / "registry.sqlite").exists()


def test_harvest_from_activations_page(workspace):
    name = _built_zoo_model()
    at = app_test().run()
    at.switch_page("views/activations.py").run()
    assert not at.exception
    assert any("No activation stores" in i.value for i in at.info)
    at.number_input(key="act_n_tokens").set_value(2000)
    at.button(key="act_harvest").click().run(timeout=300)
    assert not at.exception and not page_errors(at), page_errors(at)
    arts = workspace.list("activations")
    assert len(arts) == 1 and arts[0].model == name
    assert at.selectbox(key="act_store").value == arts[0].name
    assert {m.label: m.value for m in at.metric}["Tokens"] == f"{arts[0].meta['n_tokens']:,}"
    assert arts[0].meta["n_tokens"] >= 2000
    assert len(at.get("plotly_chart")) == 2
    at.switch_page("views/home.py").run()
    assert arts[0].name in set(at.dataframe[1].value["name"])


def test_harvest_a_user_corpus_from_the_activations_page(workspace, tmp_path):
    from sae_core.models.texts import TextSource

    corpus = tmp_path / "mine.jsonl"
    corpus.write_text("\n".join(json.dumps({"body": f"{i} {i + 1} {i + 2} {i + 3}"}) for i in range(60)))
    at = app_test().run()
    at.switch_page("views/activations.py").run()
    at.text_input(key="act_corpus").input(str(tmp_path / "missing.jsonl")).run()
    assert any("does not exist" in e for e in page_errors(at)) and at.button(key="act_harvest").disabled
    at.text_input(key="act_corpus").input(str(corpus)).run()
    assert any("line 1 has no 'text' field (it has ['body'])" in e for e in page_errors(at))
    at.text_input(key="act_column").input("body").run()
    text = TextSource(str(corpus), "body")
    assert f"Text: {text.describe()}; every 10th document is held out for CE/KL recovered." in \
        [c.value for c in at.caption]
    at.number_input(key="act_n_tokens").set_value(256)
    at.button(key="act_harvest").click().run(timeout=300)
    assert not at.exception and not page_errors(at), page_errors(at)
    [art] = workspace.list("activations")
    assert art.meta["source"] == text.describe() and art.meta["text_source"]["sha256"] == text.digest
    assert at.json[0].value and json.loads(at.json[0].value)["source"] == text.describe()


def test_sampled_sae_page_shows_the_sweep(workspace):
    from sae_core.training.sweep import load_sweep_table

    sweep = small_sweep(workspace)
    at = app_test().run()
    at.switch_page("views/sampled_sae.py").run()
    assert not at.exception and not page_errors(at), page_errors(at)
    assert at.selectbox(key="sw_sweep").value == sweep.name
    shown = at.dataframe[-1].value  # the last: every SAE of the sweep
    expected = load_sweep_table(sweep)
    assert len(shown) == len(expected) == 4  # 2 values of l, BatchTopK, TopK
    assert sorted(shown["fvu"].round(9)) == sorted(expected["fvu"].round(9))
    # no downstream metrics without a model: no CE chart, in the first charts or the trade-off view
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert titles[:3] == ["FVU (lower is better) vs l", "distinct latents per batch vs l", "FVU vs L0 frontier"]
    assert not [t for t in titles if t.startswith(("CE loss", "KL recovered", "sparse probing"))]
    assert len(titles) == 4  # the trade-off view waits for the downstream metrics (the curves are last)
    assert at.get("download_button")
    assert sorted(shown["fvu_batch_rule"].dropna().round(9)) == sorted(expected["fvu_batch_rule"].dropna().round(9))
    curve = json.loads(at.get("plotly_chart")[-1].proto.spec)  # the training curves
    assert sorted(t["name"] for t in curve["data"]) == ["batchtopk", "sampled l=1 l2", "sampled l=4 l2", "topk"]
    assert not at.warning  # every FVU of this sweep is below 1
    assert "Activations (FVU, L0, sparsity) from: zoo corpus, corpus seed 0" in [c.value for c in at.caption]


def test_sampled_sae_page_without_sweep_says_what_to_do(workspace):
    at = app_test().run()
    at.switch_page("views/sampled_sae.py").run()
    assert not at.exception
    assert any("No sweep" in i.value for i in at.info)


def test_run_a_sweep_from_the_page(workspace):
    at = app_test().run()
    at.switch_page("views/sampled_sae.py").run()
    at.number_input(key="sw_k").set_value(4)
    at.number_input(key="sw_d_sae").set_value(64)
    at.number_input(key="sw_tokens").set_value(10_000)
    at.number_input(key="sw_harvest").set_value(5_000)
    at.multiselect(key="sw_ls").set_value([1, 4])
    at.multiselect(key="sw_rules").set_value(["entropy"])
    at.selectbox(key="sw_pool").set_value("sample")
    at.button(key="sw_run").click().run(timeout=600)
    assert not at.exception and not page_errors(at), page_errors(at)
    [sweep] = workspace.list("sweep")
    assert at.selectbox(key="sw_sweep").value == sweep.name
    table = at.dataframe[-1].value  # the last: every SAE of the sweep
    assert sorted(table["arch"]) == ["batchtopk", "sampled", "sampled", "topk"]
    assert set(table["scoring"].dropna()) == {"entropy"}
    assert list(table["pool_rule"].fillna("-")) == ["sample", "sample", "-", "-"]  # the rule asked for
    assert table["ce_loss_recovered"].notna().all()  # the page's sweep splices into the model
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert "CE loss recovered (vs zero ablation) vs l" in titles
