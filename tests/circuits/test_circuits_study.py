"""The circuits study end to end on zoo:tiny-b: the artifact, its CLI and its page show the same
numbers the library computed."""
import json

import pytest

from sae_core.circuits.graph import CircuitGraph, Edge
from sae_core.circuits.job import KIND, CircuitStudy, CircuitStudyConfig, circuit_edges, circuits_to_workspace
from sae_core.circuits.tasks import CircuitError
from tests.helpers import APP, small_circuits_config


# tasks not in alphabetical order: the stored JSON sorts task keys, the matrices follow the config
SMALL = small_circuits_config()
CLI_ARGS = ["--tasks", "months,digits", "--prompts", "24", "--curve", "20,40", "--random", "3", "--validate", "8"]


def cmp_tasks(results: dict) -> list[str]:
    return results["compare"]["tasks"]


@pytest.fixture(scope="module")
def study(circuits_ws):
    return circuits_ws  # the small study, built once per run (tests/conftest.py)


@pytest.mark.slow  # builds the whole circuits study
def test_study_holds_consistent_circuits_graphs_and_comparison(study):
    ws, art = study
    st = CircuitStudy.open(art.path)
    r = st.results
    assert st.tasks == ["months", "digits"] == cmp_tasks(r)
    assert r["mode"] == "default" and r["rules"]["edges"] == "eap" and art.meta["mode"] == "default"
    cmp = r["compare"]
    for i, t in enumerate(st.tasks):
        v = r["tasks"][t]
        c = st.circuit(t)
        assert c.performance >= 80 and len(c.heads()) <= 16          # the target on zoo B
        # the diagonal of the cross-task matrix re-evaluates each circuit on its own task
        assert cmp["cross_performance"][i][i] == pytest.approx(c.performance, abs=1e-6)
        assert cmp["node_iou"][i][i] == 1.0
        g = st.graph(t)
        assert g.meta["task"] == t and set(g.in_graph) == set(v["edges_in_graph"])
        allowed = set(c.nodes) | {"input", "logits"}
        assert all({Edge.parse(e).sender, Edge.parse(e).receiver} <= allowed for e in g.in_graph)
        assert g.in_graph == circuit_edges(g, c.nodes, SMALL.edge_threshold)
        assert len(v["validation"]["edges"]) == 8 and -1 <= v["validation"]["spearman"] <= 1
        assert [p["threshold"] for p in v["curve"]] == [20.0, 40.0]
        assert v["curve"][0]["size"] == len(c.nodes)                     # T=20 is the study's own threshold
        assert v["ov"][0]["next_score"] >= v["ov"][-1]["next_score"]
    assert st.components("digits")[:9] == [f"a0.h{h}" for h in range(8)] + ["m0"]
    shared = set(st.circuit("digits").nodes) & set(st.circuit("months").nodes)
    union = set(st.circuit("digits").nodes) | set(st.circuit("months").nodes)
    assert cmp["node_iou"][0][1] == pytest.approx(len(shared) / len(union))
    assert set(cmp["shared_nodes"]) == shared and set(cmp["membership"]) == union
    assert circuits_to_workspace(ws, SMALL).name == art.name and len(ws.list(KIND)) == 1  # found, not rebuilt


def test_bad_study_configurations():
    for kwargs, words in [({"tasks": ("primes",)}, "tasks"), ({"method": "acdc"}, "method"),
                          ({"baseline": "zero"}, "baseline"), ({"edge_threshold": 2.0}, "fraction"),
                          ({"template": "poem"}, "template"), ({"mode": "authors"}, "mode 'authors'"),
                          ({"ratio_threshold": 1.5}, "ratio_threshold=1.5")]:
        with pytest.raises(CircuitError, match=words):
            CircuitStudyConfig(**kwargs)
    assert CircuitStudyConfig.from_json(SMALL.to_json()) == SMALL


@pytest.mark.slow  # builds the whole circuits study
def test_cli_prints_the_studys_circuits_edges_and_comparison(study, tmp_path):
    from typer.testing import CliRunner

    from sae_core.cli import app

    ws, art = study
    st = CircuitStudy.open(art.path)
    run = lambda *a: CliRunner().invoke(app, ["circuit", *a, "-w", str(ws.root)], env={"COLUMNS": "300"})
    out = run("discover", *CLI_ARGS, "--json")
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert got["artifact"] == art.name   # the same configuration finds the same study
    for t in ["digits", "months"]:
        assert got["tasks"][t]["nodes"] == st.circuit(t).nodes
        assert got["tasks"][t]["metrics"]["performance"] == pytest.approx(st.circuit(t).performance)
    text = run("discover", *CLI_ARGS)
    assert f"performance {st.circuit('months').performance:.1f}%" in text.output
    val = st.results["tasks"]["months"]["validation"]
    assert (f"top {len(val['edges'])} edges by |attribution| against exact patching: Spearman rho "
            f"{val['spearman']:.2f}") in text.output
    export = tmp_path / "digits.json"
    edges = run("edges", "--task", "digits", "--top", "5", "--export", str(export), "--study", art.name)
    assert edges.exit_code == 0, edges.output
    g = st.graph("digits")
    best = max(g.scores, key=lambda n: abs(g.scores[n]))
    assert any(line.startswith(best) and f"{g.scores[best]:.3f}" in line for line in edges.output.splitlines())
    assert CircuitGraph.load(export) == g
    cmp = run("compare")
    assert f"{st.results['compare']['node_iou'][0][1]:.2f}" in cmp.output and "shared by all tasks" in cmp.output
    bad = run("discover", "--method", "acdc")
    assert bad.exit_code == 2 and "method 'acdc'" in bad.output
    missing = run("edges", "--study", "nope")
    assert missing.exit_code == 2 and "no circuits study nope" in missing.output


def test_cli_heads_ranks_successor_heads(tiny_b):
    from typer.testing import CliRunner

    from sae_core.circuits.heads import ov_scores
    from sae_core.cli import app

    out = CliRunner().invoke(app, ["circuit", "heads", "--task", "months", "--json"], env={"COLUMNS": "300"})
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert [s["head"] for s in got["ov"]] == [s.head for s in ov_scores(tiny_b, "months")]
    assert len(got["attention"]) == 32


@pytest.mark.slow  # builds the whole circuits study
def test_circuits_page_shows_the_studys_numbers_and_redraws_on_threshold(study, monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    ws, art = study
    st = CircuitStudy.open(art.path)
    app = APP
    monkeypatch.setenv("SAE_STUDIO_WORKSPACE", str(ws.root))
    at = AppTest.from_file(app, default_timeout=120).run()
    at.switch_page("views/circuits.py").run()
    assert not at.exception and not at.error
    metrics = {m.label: m for m in at.metric}
    for t in ["digits", "months"]:
        assert metrics[t].value == f"{st.circuit(t).performance:.1f}%"
    charts = lambda: [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert at.segmented_control(key="circ_view").value == "months"      # the first task of the study
    at.segmented_control(key="circ_view").set_value("digits").run()
    g = st.graph("digits")

    def drawn_edges(fig):
        lines = [tr for tr in fig["data"] if tr.get("mode") == "lines"]
        return sum(tr["x"].count(None) for tr in lines)

    assert drawn_edges(charts()[0]) == len(circuit_edges(g, st.circuit("digits").nodes, SMALL.edge_threshold))
    nodes = next(tr for tr in charts()[0]["data"] if tr.get("name") == "components")
    assert "a0.h0" in nodes["customdata"] and "logits" in nodes["customdata"]
    at.slider(key="circ_thr").set_value(0.2).run()
    assert drawn_edges(charts()[0]) == len(circuit_edges(g, st.circuit("digits").nodes, 0.002))
    # the component panel: the chosen head's ablation score and OV scores, from the study
    r = st.results["tasks"]["digits"]
    head = r["ov"][0]["head"]
    at.selectbox(key="circ_node").set_value(head).run()
    assert not at.exception
    panel = {m.label: m.value for m in at.metric}
    assert panel["Performance, ablated alone"] == f"{r['ablation'][head]:.1f}%"
    assert panel["OV next / copy"] == f"{r['ov'][0]['next_score']:.2f} / {r['ov'][0]['copy_score']:.2f}"
    attn = next(c for c in charts() if c["layout"]["title"]["text"].startswith(f"{head}: attention"))
    assert len(attn["data"][0]["z"]) == len(attn["data"][0]["x"])          # query x key over the prompt
    assert any("No SAE of zoo:tiny-b" in c.value for c in at.caption)   # none in this workspace yet
    # an SAE at a hook the head writes to: its features, by attribution, as the library ranks them
    from sae_core.circuits.features import feature_attributions
    from sae_core.circuits.tasks import TaskConfig, make_task
    from sae_core.models.loading import load_model
    from tests.helpers import residual_sae

    sae, hook = residual_sae(ws, head, "circuit-test-sae", 256)
    model = load_model("zoo:tiny-b")
    want = feature_attributions(model, make_task(model, TaskConfig(task="digits", n_prompts=SMALL.n_prompts)), sae, hook)
    from sae_app import listing
    listing.changed()
    at.run()
    table = next(d.value for d in at.dataframe if "attribution (LD)" in d.value.columns)
    assert table["feature"].tolist() == [f.feature for f in want]
    assert table["attribution (LD)"].tolist() == pytest.approx([f.score for f in want], rel=1e-4)
    assert at.button(key=f"circ_open_circuit-test-sae_{want[0].feature}").label == \
        f"Open feature {want[0].feature} in the feature browser"
    heat = next(c for c in charts() if c["layout"]["title"]["text"] == "Node IoU")
    assert heat["data"][0]["z"] == st.results["compare"]["node_iou"] and heat["data"][0]["x"] == st.tasks
    at.segmented_control(key="circ_view").set_value("union").run()
    assert not at.exception and any("Union view" in c.value for c in at.caption)
    at.segmented_control(key="circ_view").set_value("digits").run()
    at.button(key=f"circ_open_circuit-test-sae_{want[0].feature}").click().run()   # into the feature browser
    assert not at.exception and at.title[0].value == "Feature browser"
    assert (at.session_state["model_name"], at.session_state["hook"]) == ("zoo:tiny-b", hook)
    assert at.session_state["fb_sae"] == "circuit-test-sae"
    # an empty workspace offers to build the study
    monkeypatch.setenv("SAE_STUDIO_WORKSPACE", str(tmp_path / "empty"))
    at = AppTest.from_file(app, default_timeout=120).run()
    at.switch_page("views/circuits.py").run()
    assert not at.exception and "No circuits study" in at.info[0].value
    assert at.button(key="circ_build").label == "Find the circuits on zoo:tiny-b"


@pytest.mark.slow  # builds the whole circuits study
def test_circuits_page_runs_a_new_study_on_the_sidebars_model(study, monkeypatch):
    from streamlit.testing.v1 import AppTest

    ws, _ = study
    app = APP
    monkeypatch.setenv("SAE_STUDIO_WORKSPACE", str(ws.root))
    at = AppTest.from_file(app, default_timeout=300).run()
    at.switch_page("views/circuits.py").run()
    assert at.session_state["model_name"] == "zoo:tiny-a"       # the sidebar's default model
    at.multiselect(key="circ_new_tasks").set_value(["digits"])
    at.number_input(key="circ_new_prompts").set_value(16)
    at.button(key="circ_new_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    new = next(a for a in ws.list(KIND) if a.model == "zoo:tiny-a")
    assert new.name in at.selectbox(key="circ").value            # the new study is the one shown
    built = CircuitStudy.open(new.path)
    assert built.config["n_prompts"] == 16 and built.tasks == ["digits"]
    assert {m.label: m.value for m in at.metric}["digits"] == f"{built.circuit('digits').performance:.1f}%"
    assert built.components("digits") == ["a0.h0", "a0.h1", "a0.h2", "a0.h3", "m0", "a1.h0", "a1.h1", "a1.h2",
                                          "a1.h3", "m1"]
