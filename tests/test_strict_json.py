"""Every JSON the project writes or prints parses with a strict parser (issue #28): no ``NaN``,
``Infinity`` or ``-Infinity`` (Python's json writes them; JavaScript's ``JSON.parse``, jq and serde
refuse them). Non-finite numbers are written as null (``sae_core.io.dumps_json``)."""
import json
import math
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from sae_core.cli import app
from sae_core.features.config import IndexConfig
from sae_core.features.job import build_feature_index
from sae_core.io import atomic_write_json, dumps_json, read_json
from sae_core.sae.config import SAEConfig
from sae_core.sae.registry import create_sae

runner = CliRunner()
DEAD = 0  # b_enc far below zero: the feature never fires


def strict(text: str):
    """``json.loads`` as a strict parser reads: NaN and the infinities are errors."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_the_strict_parser_refuses_what_python_writes():
    with pytest.raises(ValueError, match="-Infinity"):
        strict(json.dumps({"x": float("-inf")}))


def test_dumps_json_writes_null_for_every_non_finite_number():
    obj = {"a": float("nan"), "b": [1.5, float("inf"), (float("-inf"), 2)], "c": {"d": -0.25}, "e": "NaN"}
    assert strict(dumps_json(obj)) == {"a": None, "b": [1.5, None, [None, 2]], "c": {"d": -0.25}, "e": "NaN"}


def test_atomic_write_json_with_inf_and_nan_parses_strictly(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"fvu": float("nan"), "z": float("inf"), "l0": 3.5, "steps": 7})
    text = (tmp_path / "m.json").read_text()
    assert strict(text) == {"fvu": None, "l0": 3.5, "steps": 7, "z": None}
    assert read_json(tmp_path / "m.json")["z"] is None


@pytest.fixture(scope="module")
def dead_index(tiny_a, tmp_path_factory):
    """A small index whose feature ``DEAD`` never fires."""
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="topk", d_in=128, d_sae=16, k=4))
    with torch.no_grad():
        sae.b_enc[DEAD] = -1e4
    cfg = IndexConfig(n_tokens=200, batch_size=4, n_top=4, n_samples=2, hist_bins=8, n_logits=3,
                      logit_hist_bins=5, n_promoters=2, n_nearest=2, feature_map=False)
    texts = ["There once lived a quiet sheep called Hugo .", "63 , 64 , 65 , 66 , 67"]
    return build_feature_index(tiny_a, sae.eval(), "blocks.1.hook_resid_post", texts,
                               tmp_path_factory.mktemp("strict"), cfg, meta={"model_name": "zoo:tiny-a"})


def test_feature_json_of_a_dead_feature_printed_and_exported(dead_index, tmp_path):
    printed = runner.invoke(app, ["feature", str(DEAD), "--index", str(dead_index.path)])
    assert printed.exit_code == 0, printed.output
    rec = strict(printed.stdout)
    assert rec["index"] == DEAD and rec["frac_nonzero"] == 0.0 and rec["activations"] == []
    assert rec["sae_studio"]["count"] == 0
    assert rec["sae_studio"]["log10_density"] is None  # "never fired"
    out = tmp_path / "f.json"
    written = runner.invoke(app, ["feature", str(DEAD), "--index", str(dead_index.path), "--out", str(out)])
    assert written.exit_code == 0 and strict(out.read_text()) == rec
    live = strict(runner.invoke(app, ["feature", "1", "--index", str(dead_index.path)]).stdout)
    assert live["sae_studio"]["log10_density"] == pytest.approx(math.log10(live["frac_nonzero"]))


def _old_results_file(path, obj):
    """A results file as workspaces written before strict JSON hold it (``Infinity`` and ``NaN``):
    Python reads it back, and the commands must still print strict JSON."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(obj))
    return read_json(path / "results.json")


def test_universality_json_is_strict(tmp_path, monkeypatch):
    import sae_core.universality.job as job

    sig = {"p": 0.01, "p_authors": 0.0, "z": float("inf"), "null_mean": 0.2}
    results = _old_results_file(tmp_path / "u", {
        "n_pairs": 12, "n_tokens": 500, "steps": [["matched", 12]], "step_mean_corr": [float("nan")], "runs": 20,
        "warnings": [], "mode": "default", "codes": "sparse", "unique_a": 12, "match_label": "many-to-one",
        "subspace_procedure": "matched", "subspaces": {},
        "scores": {"svcca": {"value": 0.5, "shuffled": sig, "random_subsets": None, "ci95": [0.4, float("nan")],
                             "used": 12}}})
    monkeypatch.setattr(job, "universality_to_workspace", lambda ws, cfg, on_progress=None: SimpleNamespace(
        kind="universality", name="u1", path=tmp_path / "u"))
    monkeypatch.setattr(job.Universality, "open", classmethod(lambda cls, p: SimpleNamespace(results=results)))
    got = runner.invoke(app, ["universality", "--json", "-w", str(tmp_path / "ws")])
    assert got.exit_code == 0, got.output
    svcca = strict(got.stdout)["scores"]["svcca"]
    assert (svcca["value"], svcca["z"], svcca["ci95"]) == (0.5, None, [0.4, None])
    assert strict(got.stdout)["step_mean_corr"] == [None]
    # the file as written now holds null for z; the table prints it
    atomic_write_json(tmp_path / "u" / "results.json", results)
    results = read_json(tmp_path / "u" / "results.json")
    table = runner.invoke(app, ["universality", "-w", str(tmp_path / "ws")])
    assert table.exit_code == 0, table.output
    assert "svcca             0.500     0.200   0.010     n/a" in table.output


def test_circuit_compare_json_is_strict(tmp_path, monkeypatch):
    import sae_core.cli.circuits as cli

    compare = _old_results_file(tmp_path / "c", {"tasks": ["digits", "months"], "node_iou": [[1.0, 0.5], [0.5, 1.0]],
                                                 "cross_performance": [[100.0, float("nan")], [float("-inf"), 100.0]]})
    monkeypatch.setattr(cli, "_open", lambda study, ws: (SimpleNamespace(name="c1"), SimpleNamespace(
        results={"compare": compare, "mode": "default"}, config={"method": "eap"})))
    got = runner.invoke(app, ["circuit", "compare", "--json"])
    assert got.exit_code == 0, got.output
    assert strict(got.stdout)["cross_performance"] == [[100.0, None], [None, 100.0]]


def test_circuit_heads_json_is_strict():
    got = runner.invoke(app, ["circuit", "heads", "--json", "--model", "zoo:tiny-a", "--task", "digits"])
    assert got.exit_code == 0, got.output
    out = strict(got.stdout)
    assert out["task"] == "digits" and len(out["ov"]) == 2 * 4  # tiny-a: 2 layers x 4 heads


def test_steer_eval_json_is_strict(tmp_path, monkeypatch):
    import sae_core.cli.steering as cli
    import sae_core.models.loading as loading

    (tmp_path / "p.txt").write_text("Tell me a story.\n")
    monkeypatch.setattr(loading, "load_model", lambda name: object())
    monkeypatch.setattr(cli, "_interventions", lambda *a: [])
    monkeypatch.setattr(cli, "score_prompts", lambda lm, texts, specs, n: {  # rates of no prompts: 0/0
        "n": 0, "hate_rate": float("nan"), "refusal_rate": float("nan"), "generations": []})
    got = runner.invoke(app, ["steer", "eval", "--model", "zoo:tiny-a", "--prompts", str(tmp_path / "p.txt"),
                              "--json", "-w", str(tmp_path / "ws")])
    assert got.exit_code == 0, got.output
    assert strict(got.stdout) == {"n": 0, "hate_rate": None, "refusal_rate": None, "generations": []}
