"""Evaluation stored with the SAEs and in a sweep's table; ``sae-core evaluate`` and ``sweep
--evaluate``; the trade-off verdict read from a table."""
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from sae_core.cli import app
from sae_core.evaluation.config import AbsorptionConfig
from sae_core.evaluation.config import EvaluationConfig, ProbingConfig
from sae_core.evaluation.job import evaluate_sweep, load_evaluation
from sae_core.evaluation.tradeoff import best_l, verdict
from sae_core.errors import SAECoreError

runner = CliRunner()
SMALL = EvaluationConfig(probing=ProbingConfig(tasks=("month_name", "harmful_prompt"), ks=(1, 5), examples=40,
                                               documents=30, random_draws=2),
                         absorption=AbsorptionConfig(n_docs=60))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_a):
    from sae_core.workspace import Workspace
    from tests.helpers import small_sweep

    ws = Workspace(tmp_path_factory.mktemp("eval_ws"))
    sweep = small_sweep(ws)
    table = evaluate_sweep(ws, sweep, SMALL, model=tiny_a)
    return ws, sweep, table


def test_a_sweeps_table_carries_every_metric(evaluated):
    ws, sweep, table = evaluated
    assert len(table) == 4  # l=1, l=4, BatchTopK, TopK
    for col in ("probe_sae_top_1", "probe_sae_top_5", "probe_llm_top_1", "probe_random_top_1", "absorption_rate",
                "lottery_top_share", "lottery_top_share_batchtopk"):
        assert table[col].notna().all(), col
    assert ((0 <= table["probe_sae_top_1"]) & (table["probe_sae_top_1"] <= 1)).all()
    # the stored table (strict JSON) and its CSV carry the same numbers
    stored = json.loads((sweep.path / "table.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    csv = pd.read_csv(sweep.path / "table.csv")
    for row, saved, line in zip(table.to_dict("records"), stored, csv.to_dict("records")):
        assert saved["probe_sae_top_5"] == row["probe_sae_top_5"] == pytest.approx(line["probe_sae_top_5"])
        assert saved["absorption_rate"] == pytest.approx(line["absorption_rate"])
    # each SAE's full results are stored with it, and a second evaluation reuses them
    sae = ws.get("sae", table["sae"].iloc[0])
    probing = load_evaluation(ws, sae, "probing", SMALL)
    assert probing["tasks"] == ["month_name", "harmful_prompt"]
    assert probing["mean"]["sae_top_1"] == table["probe_sae_top_1"].iloc[0]
    before = {a.name: a.created for a in ws.list("evaluation")}
    assert len(before) == 3 * 4
    evaluate_sweep(ws, sweep, SMALL)  # no model needed: every result is stored
    assert {a.name: a.created for a in ws.list("evaluation")} == before


def test_evaluate_prints_and_refuses_clearly(evaluated, tmp_path):
    ws, _, table = evaluated
    name = table["sae"].iloc[0]
    out = runner.invoke(app, ["evaluate", "--sae", name, "--lottery", "--json", "-w", str(ws.root)])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output[out.output.index("{"):])
    assert set(result) == {"lottery"} and result["lottery"]["top_share"] == table["lottery_top_share"].iloc[0]
    out = runner.invoke(app, ["evaluate", "--sae", name, "--lottery", "-w", str(ws.root)])
    assert f"sae/{name}" in out.output and "lottery_top_share" in out.output
    for args, says in ((["--sae", "nope"], "'nope' is not an SAE"),
                       (["--sae", name, "--probing", "--tasks", "months"], "unknown probing task"),
                       (["--sae", name, "--probing", "--ks", "1,x"], "comma-separated whole numbers"),
                       (["--sae", name, "--labels", str(tmp_path / "none.jsonl")], "does not exist")):
        out = runner.invoke(app, ["evaluate", *args, "-w", str(ws.root)])
        assert out.exit_code == 2 and says in out.output, out.output


def test_sweep_refuses_an_unknown_metric_before_any_work(tmp_path):
    out = runner.invoke(app, ["sweep", "--evaluate", "probing,speed", "-w", str(tmp_path / "ws")])
    assert out.exit_code == 2 and "choose one or more of probing, absorption, lottery" in out.output
    assert not (tmp_path / "ws" / "activations").exists()
    with pytest.raises(SAECoreError, match="metrics="):
        EvaluationConfig(metrics=())


def test_the_verdict_says_which_l_wins_which_metric():
    rows = [{"arch": "sampled", "scoring": "l2", "l": l, "fvu": f, "probe_sae_top_1": p, "absorption_rate": a, "l0": 4}
            for l, f, p, a in ((1, 0.30, 0.90, 0.10), (4, 0.10, 0.80, 0.10), (16, 0.05, 0.85, 0.20))]
    rows += [{"arch": "batchtopk", "scoring": None, "l": None, "fvu": 0.04, "probe_sae_top_1": 0.8,
              "absorption_rate": 0.3, "l0": 4}]
    best = best_l(pd.DataFrame(rows))
    assert [(b["column"], b["best"], b["batchtopk"]) for b in best] == [
        ("fvu", "l=16 (l2)", 0.04), ("probe_sae_top_1", "l=1 (l2)", 0.8), ("absorption_rate", "l=1 (l2)", 0.3)]
    assert verdict(best) == ("No single l is best on every metric: l=1 for sparse probing, k = 1 (test accuracy), "
                             "feature absorption rate; l=16 for FVU (reconstruction).")
    assert verdict(best[1:]).startswith("One l is best on every metric measured here: l=1 for")


def test_sweep_evaluate_writes_the_lottery_into_the_table(tmp_path):
    """``sae-core sweep --evaluate lottery`` on a user's activation file: the lottery needs no
    model, only the SAEs' held-out activations."""
    import numpy as np

    np.save(tmp_path / "acts.npy", np.random.default_rng(0).normal(size=(3000, 16)).astype("float32"))
    out = runner.invoke(app, ["sweep", "--acts", str(tmp_path / "acts.npy"), "--l", "1,2", "--scoring", "l2",
                              "--k", "2", "--d-sae", "32", "--tokens", "2048", "--batch-size", "512",
                              "--evaluate", "lottery", "-w", str(tmp_path / "ws")])
    assert out.exit_code == 0, out.output
    from sae_core.workspace import Workspace

    [sweep] = Workspace(tmp_path / "ws").list("sweep")
    table = pd.read_csv(sweep.path / "table.csv")
    assert len(table) == 4 and table["lottery_top_share"].between(0, 1).all()
    assert "probe_sae_top_1" not in table  # only what was asked
    # probing needs the SAE's model, which an activation file does not name
    out = runner.invoke(app, ["evaluate", "--sae", table["sae"].iloc[0], "--probing", "-w", str(tmp_path / "ws")])
    assert out.exit_code == 2 and "trained on an activation file with no model recorded" in out.output
