"""A study in the paper mode (issue #29): on the planted model it records its mode and rules, keeps
the authors' edges (the successor head's edge alone), and its Method rows and `circuit compare` say
so; `circuit discover --paper` sets mode and method, and --method still chooses the edges."""
import pytest
from typer.testing import CliRunner

from sae_core.circuits.job import CircuitStudy, CircuitStudyConfig, circuits_to_workspace
from sae_core.circuits.method import PAPER, method_rows
from sae_core.circuits.tasks import CircuitError
from sae_core.cli import app
from sae_core.workspace import Workspace
from tests.circuits.planted_circuit import successor_model

PAPER_CFG = CircuitStudyConfig(model="planted", tasks=("digits",), template="bare", mode="paper", method="paper",
                               n_prompts=16, curve_thresholds=(20.0,), n_random=0, validate_top=0)


@pytest.fixture(scope="module")
def paper_study(tmp_path_factory):
    model = successor_model(tmp_path_factory.mktemp("planted"))
    ws = Workspace(tmp_path_factory.mktemp("paper") / "ws")
    seen = []
    art = circuits_to_workspace(ws, PAPER_CFG, load=lambda name: model,
                                on_progress=lambda d, t, text: seen.append((d, t, text)))
    return ws, art, seen


def test_the_artifact_records_the_paper_mode_and_the_authors_edges(paper_study):
    ws, art, seen = paper_study
    # the job reports its progress, steadily, to the end
    assert seen[-1][2] == "done" and seen[-1][0] == seen[-1][1]
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    st = CircuitStudy.open(art.path)
    r = st.results
    assert r["mode"] == "paper" and art.meta["mode"] == "paper" and st.config["mode"] == "paper"
    assert r["rules"]["edges"] == "paper" and r["rules"]["prompts"] == "paper" and r["rules"]["ov"] == "paper"
    digits = r["tasks"]["digits"]
    assert digits["circuit"]["nodes"] == ["a1.h0"]               # the planted successor head alone
    assert digits["edges_in_graph"] == ["a1.h0->logits"] and digits["validation"] is None
    g = st.graph("digits")
    assert g.meta["method"] == "paper" and g.meta["ratio"] == 0.8
    assert {n for n, s in g.scores.items() if s} == {"a1.h0->logits"}  # the one edge scored (EAP-IG's file: 0 else)
    assert r["compare"]["edge_iou"] == [[1.0]]
    rows = {row["step"]: row for row in method_rows(r)}
    assert list(rows) == ["mode", "prompts", "nodes", "edges", "OV scores", "logit lens"]
    assert rows["mode"]["this study"] == "paper"
    assert rows["edges"]["this study"].startswith("the authors' computation (edge_pruning.paper_edges), kept under 0.8")
    assert "hook_z" in rows["edges"]["this study"] and "run_edge_ablation.py" in rows["edges"][PAPER]
    assert rows["prompts"]["this study"].startswith("the authors' rules") and "one template (bare)" in \
        rows["prompts"]["this study"]
    assert "b_V" in rows["OV scores"][PAPER] and rows["OV scores"]["this study"].startswith("the authors' reading")
    assert CircuitStudyConfig.from_json(st.config) == PAPER_CFG


def test_compare_prints_the_mode_and_both_ious(paper_study):
    ws, art, _ = paper_study
    out = CliRunner().invoke(app, ["circuit", "compare", "-w", str(ws.root)], env={"COLUMNS": "300"})
    assert out.exit_code == 0, out.output
    assert "mode paper: paper prompts, paper OV scores; edges by the authors' path patching" in out.output
    assert "digits 1 nodes / 1 edges" in out.output and "edge IoU" in out.output


@pytest.mark.parametrize("args, mode, method", [([], "default", "eap"), (["--paper"], "paper", "paper"),
                                                (["--paper", "--method", "eap"], "paper", "eap"),
                                                (["--method", "paper"], "default", "paper")])
def test_discover_paper_sets_mode_and_method_and_method_still_overrides(args, mode, method, monkeypatch, tmp_path):
    import sae_core.circuits.job as job

    seen = []

    def stop(ws, cfg, **kw):
        seen.append(cfg)
        raise CircuitError("stopped before building")
    monkeypatch.setattr(job, "circuits_to_workspace", stop)
    out = CliRunner().invoke(app, ["circuit", "discover", *args, "-w", str(tmp_path)])
    assert out.exit_code == 2 and "stopped before building" in out.output
    assert (seen[0].mode, seen[0].method) == (mode, method)
