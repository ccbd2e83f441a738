"""The logit lens (issue #29): its last row is the model's own prediction, and the paper reading is
the authors' computation on the transformers model's hidden states."""
import pytest
import torch

from sae_core.circuits.logit_lens import logit_lens
from sae_core.circuits.tasks import CircuitError, TaskConfig, make_task


@pytest.fixture(scope="module")
def digits(tiny_b):
    return make_task(tiny_b, TaskConfig(task="digits", n_prompts=16))


def test_the_last_row_is_the_models_own_prediction(tiny_b, digits):
    rows = logit_lens(tiny_b, digits)
    assert [r.state for r in rows] == ["embed"] + [f"block {L}" for L in range(tiny_b.cfg.n_layers)]
    with torch.no_grad():
        probs = torch.softmax(tiny_b(digits.clean_BT)[:, -1].double(), -1)
    p = probs.gather(1, digits.answer_B[:, None])[:, 0]
    assert rows[-1].p_answer == pytest.approx(float(p.mean()), abs=1e-6)
    assert rows[-1].top1 == 1.0  # the task keeps only prompts whose top-1 is the answer
    assert rows[-1].top5_first[0].strip() == tiny_b.tokenizer.decode([int(digits.answer_B[0])]).strip()
    assert rows[0].p_answer < rows[-1].p_answer  # the embedding alone does not know the next digit


def test_the_paper_reading_is_the_authors_on_the_hidden_states(tiny_b, digits):
    """actvs_to_logits: hidden_states[i][:, -1] @ lm_head.weight.T, the last one normed once more."""
    hf = tiny_b.original_model
    with torch.no_grad():
        hidden = hf(digits.clean_BT, output_hidden_states=True).hidden_states
        norm, W = hf.gpt_neox.final_layer_norm, hf.get_output_embeddings().weight
        want = []
        for i, h in enumerate(hidden):
            last = h[:, -1]
            logits = (norm(last) if i == len(hidden) - 1 else last) @ W.T
            probs = torch.softmax(logits.double(), -1)
            want.append(float(probs.gather(1, digits.answer_B[:, None]).mean()))
    got = [r.p_answer for r in logit_lens(tiny_b, digits, mode="paper")]
    assert got == pytest.approx(want, abs=1e-6)
    with pytest.raises(CircuitError, match="logit lens mode 'tuned': choose one of final_norm, paper"):
        logit_lens(tiny_b, digits, mode="tuned")


def test_circuit_lens_prints_the_librarys_rows(tiny_b):
    import json

    from typer.testing import CliRunner

    from sae_core.cli import app

    args = ["circuit", "lens", "--model", "zoo:tiny-b", "--task", "digits", "--prompts", "16"]
    out = CliRunner().invoke(app, args + ["--json"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    want = logit_lens(tiny_b, make_task(tiny_b, TaskConfig(task="digits", n_prompts=16)))
    assert got["mode"] == "final_norm" and [r["p_answer"] for r in got["rows"]] == \
        pytest.approx([r.p_answer for r in want], abs=1e-9)
    table = CliRunner().invoke(app, args + ["--paper"])
    assert table.exit_code == 0 and "the authors' reading" in table.output
    assert sum(ln.startswith(("embed", "block ")) for ln in table.output.splitlines()) == tiny_b.cfg.n_layers + 1
