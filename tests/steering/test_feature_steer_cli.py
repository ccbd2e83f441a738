"""``sae-core steer generate --feature N --clamp V | --alpha A``: what the library generates, the
feature's activation under every token, and each bad input as a one-line error (issue #32)."""
import pytest
import torch
from typer.testing import CliRunner

from sae_core.cli import app
from sae_core.models.generation import generate
from sae_core.models.loading import to_tokens
from sae_core.sae.config import SAEConfig
from sae_core.sae.io import save_sae
from sae_core.sae.registry import create_sae
from sae_core.steering.feature_edits import FeatureEdit, feature_interventions
from sae_core.steering.interventions import intervene

HOOK = "blocks.1.hook_resid_post"
PROMPT = "March April May June"


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    root = tmp_path_factory.mktemp("feature-cli")
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="topk", d_in=128, d_sae=32, k=4, model_name="zoo:tiny-a", hook_name=HOOK))
    save_sae(sae.eval(), root / "sae")
    save_sae(create_sae(SAEConfig(arch="topk", d_in=256, d_sae=32, k=4, hook_name=HOOK)), root / "wide")
    save_sae(create_sae(SAEConfig(arch="topk", d_in=128, d_sae=32, k=4)), root / "nohook")
    runner = CliRunner(env={"COLUMNS": "300"})

    def run(*args, code=0):
        r = runner.invoke(app, ["steer", "generate", "--model", "zoo:tiny-a", "--prompt", PROMPT,
                                "--workspace", str(root / "ws"), "--tokens", "5", *args])
        assert r.exit_code == code, r.output
        return r.output
    return run, root, sae


def test_generate_with_clamped_features_prints_the_librarys_generation(cli, tiny_a):
    run, root, sae = cli
    out = run("--sae", str(root / "sae"), "--feature", "3", "--feature", "9", "--clamp", "20", "--clamp", "0")
    ids = to_tokens(tiny_a, PROMPT)
    edits = [FeatureEdit(3, "clamp", 20.0), FeatureEdit(9, "clamp", 0.0)]
    from sae_core.sae.io import load_sae

    with torch.no_grad(), intervene(tiny_a, feature_interventions(load_sae(root / "sae"), HOOK, edits)):
        ref = generate(tiny_a, ids, 5)
    lines = dict(line.split(":", 1) for line in out.strip().splitlines() if ":" in line)
    assert lines["steered"].strip() == tiny_a.tokenizer.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)
    assert lines["plain"].strip() == tiny_a.tokenizer.decode(generate(tiny_a, ids, 5)[0, ids.shape[1]:],
                                                             skip_special_tokens=True)
    # every token but the BOS is bracketed (clamped at all positions), and feature 3's line lists them
    fired = lines["fired"].split()
    assert len(fired) == ids.shape[1] - 1 + 5 and all(w.startswith("[") for w in fired[:ids.shape[1] - 1])
    assert "feature 3 (before the edits)" in out


def test_generate_with_an_added_feature(cli):
    run, root, _ = cli
    out = run("--sae", str(root / "sae"), "--feature", "3", "--alpha", "8", "--positions", "generated")
    fired = next(line for line in out.splitlines() if line.startswith("fired:")).split()[1:]
    assert not any(w.startswith("[") for w in fired[:4]) and fired[5].startswith("[")


@pytest.mark.parametrize("args, message", [
    (("--feature", "32", "--clamp", "1"), "feature 32 is out of range: this SAE has features 0..31"),
    (("--feature", "3", "--clamp", "nan"), "clamp value nan for feature 3 is not a finite number"),
    (("--feature", "3", "--clamp", "inf"), "clamp value inf for feature 3 is not a finite number"),
    (("--feature", "3"), "give either --clamp V"),
    (("--feature", "3", "--clamp", "1", "--alpha", "2"), "give either --clamp V"),
    (("--feature", "3", "--feature", "4", "--clamp", "1", "--clamp", "2", "--clamp", "3"),
     "got 3 values for 2 features"),
])
def test_bad_feature_input(cli, args, message):
    run, root, _ = cli
    out = run("--sae", str(root / "sae"), *args, code=2)
    assert message in " ".join(out.split())


def test_an_sae_that_does_not_fit_the_model(cli):
    run, root, _ = cli
    out = run("--sae", str(root / "wide"), "--feature", "1", "--clamp", "1", code=2)
    assert "this SAE reads d_in=256, but blocks.1.hook_resid_post of this model has width 128" in " ".join(out.split())
    out = run("--sae", str(root / "nohook"), "--feature", "1", "--clamp", "1", code=2)
    assert "names no hook in its cfg.json" in " ".join(out.split())
    out = run("--feature", "1", "--clamp", "1", code=2)
    assert "give the SAE with --sae" in " ".join(out.split())
    out = run("--sae", "nope", "--feature", "1", "--clamp", "1", code=2)
    assert "neither a directory nor an SAE" in " ".join(out.split())
