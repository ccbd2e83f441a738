"""The Circuits page (issue #28): the validation title's whole number, the union view's colours in
words, and the SAE features table labelled as what it is (the residual-stream SAE of the layer)."""
import json
import re

import pytest

from sae_core.circuits.job import CircuitStudy
from tests.helpers import app_test, page_errors, residual_sae



@pytest.fixture(scope="module")
def study(circuits_ws):
    ws, art = circuits_ws  # the small study, built once per run (tests/conftest.py)
    return ws, CircuitStudy.open(art.path)


def _circuits_page(ws, monkeypatch):
    """The app on the Circuits page over ``ws``, checked to show no exception or error."""
    monkeypatch.setenv("SAE_STUDIO_WORKSPACE", str(ws.root))
    at = app_test().run()
    at.switch_page("views/circuits.py").run()
    assert not at.exception and not page_errors(at), page_errors(at)
    return at


def _charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


@pytest.mark.slow  # builds a small circuits study
def test_the_circuits_page_titles_legends_and_sae_table(study, monkeypatch):
    ws, st = study
    head = st.results["tasks"]["months"]["ov"][0]["head"]
    _, hook = residual_sae(ws, head, "resid-sae", 64)
    layer = int(hook.split(".")[1])

    at = _circuits_page(ws, monkeypatch)
    # the validation chart's title: the whole rho the study measured, wrapped, never clipped
    rho = st.results["tasks"]["months"]["validation"]["spearman"]
    titles = [c["layout"]["title"]["text"] for c in _charts(at)]
    valid = next(t for t in titles if t.startswith("Attribution vs exact patching"))
    assert valid.replace("<br>", " ").endswith(f"Spearman rho = {rho:.2f}") and "<br>" in valid
    # the SAE table says whose features these are, and why every component of the layer shows it
    for node in (head, f"m{layer}"):
        at.selectbox(key="circ_node").set_value(node).run()
        assert not at.exception
        assert any(f"Features of the residual-stream SAE after layer {layer} (`{hook}`)" in m.value
                   for m in at.markdown), [m.value for m in at.markdown]
        assert any(f"the same for every head and MLP of layer {layer}, not what {node} alone writes" in c.value
                   for c in at.caption)
    # the union view: colours named by the tasks that use them, not hex codes
    at.segmented_control(key="circ_view").set_value("union").run()
    assert not at.exception
    union = next(c for c in _charts(at) if "components coloured by the tasks" in c["layout"]["title"]["text"])
    names = [t["name"] for t in union["data"] if t.get("mode") == "markers" and t.get("name") != "components"]
    assert "input / logits" in names and any(n.endswith(" only") or n.startswith("shared by") for n in names)
    assert not any(re.search(r"#[0-9a-fA-F]{6}", c.value) for c in at.caption)
    assert not any(re.search(r"#[0-9a-fA-F]{6}", n) for n in names)


@pytest.mark.slow  # builds a small circuits study
def test_the_logit_lens_chart_holds_the_librarys_rows_in_both_readings(study, monkeypatch):
    from sae_core.circuits.logit_lens import logit_lens
    from sae_core.circuits.tasks import TaskConfig, make_task
    from sae_core.models.loading import load_model

    ws, st = study
    at = _circuits_page(ws, monkeypatch)
    cfg, task = st.config, st.tasks[0]
    model = load_model(cfg["model"])
    ts = make_task(model, TaskConfig(task=task, template=cfg["template"], n_prompts=cfg["n_prompts"], seed=cfg["seed"]))
    for mode in ("final_norm", "paper"):
        if mode == "paper":
            at.radio(key="circ_lens_mode").set_value("paper").run()
            assert not at.exception
        fig = next(c for c in _charts(at) if c["layout"]["title"]["text"] == f"Logit lens: {task}")
        want = logit_lens(model, ts, mode)
        assert fig["data"][0]["x"] == ["embed"] + [f"block {L}" for L in range(model.cfg.n_layers)]
        assert fig["data"][0]["y"] == pytest.approx([100 * r.p_answer for r in want], abs=1e-9)
        assert fig["data"][1]["y"] == pytest.approx([100 * r.top1 for r in want], abs=1e-9)
        assert ("authors" in fig["layout"]["title"]["subtitle"]["text"]) == (mode == "paper")


@pytest.mark.slow  # builds a small circuits study
def test_the_method_panel_reads_the_studys_mode_and_rules(study, monkeypatch):
    from sae_core.circuits.method import method_rows

    ws, st = study
    at = _circuits_page(ws, monkeypatch)
    mode = st.results["mode"]
    assert mode == "default" and any(f"{mode} mode, {st.config['template']} template" in c.value for c in at.caption)
    [panel] = [e for e in at.expander if e.label.startswith("Method")]
    assert panel.label == f"Method: the authors' steps and this study's ({mode} mode)"
    table = panel.dataframe[0].value
    want = method_rows(st.results)
    assert list(table.index) == [r["step"] for r in want]
    assert table["this study"].tolist() == [r["this study"] for r in want]
    assert table.loc["mode", "this study"] == "default"
    assert "this tool's rule, not the authors'" in table.loc["edges", "this study"]
    assert not at.slider(key="circ_thr").disabled      # EAP edges: the threshold applies



def _left_out_page(results: dict):
    """``sae_app.circuits_panels.left_out_caption`` on a stored study's results, as the page calls it."""
    from sae_app.circuits_panels import left_out_caption
    left_out_caption(results)


def test_the_page_lists_the_members_a_bpe_tokenizer_splits(tiny_l):
    """On zoo:tiny-l (byte-level BPE) the digits task keeps " 1" to " 8": the page says which members
    were left out, with their pieces in the sequence's order (stored keys come back sorted as text),
    and how the subjects were drawn."""
    from streamlit.testing.v1 import AppTest

    from sae_core.circuits.tasks import TaskConfig, make_task
    task = make_task(tiny_l, TaskConfig(task="digits", n_prompts=8))
    stored = json.loads(json.dumps({"tasks": {"digits": {"stats": task.stats.to_json(), "subjects": task.subjects}}},
                                   sort_keys=True))   # as a study's JSON is written
    assert list(stored["tasks"]["digits"]["stats"]["excluded"])[:2] == ["0", "10"]
    at = AppTest.from_function(_left_out_page, args=(stored,)).run()
    assert not at.exception
    captions = [c.value for c in at.caption]
    assert captions[0] == ("**digits**: 92 members are not one token of this tokenizer and are left out, as the "
                           "authors' filter does: '0' (' ' + '0'), '9' (' ' + '9'), '10' (' 1' + '0'), '11' (' 1' + "
                           "'1'), '12' (' 1' + '2'), '13' (' 1' + '3') and 86 more.")
    assert captions[1] == ("**digits** subjects: 21 nouns of 2 tokens each (this tokenizer holds 2 of 30 nouns as one "
                           "token).")
