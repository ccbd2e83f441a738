"""OV next / copy scores read the authors' way (``heads.ov_scores_paper``, their ``OV_score_fns.py``):
with b_V, exactly its term on a planted head, and from the layer-0 residual of the task's prompts
at the member positions."""
import pytest
import torch

from sae_core.circuits.heads import member_positions, ov_outputs, ov_scores, ov_scores_paper
from sae_core.circuits.tasks import TaskConfig, make_task
from sae_core.models.hooks import capture
from tests.circuits.planted_circuit import SUCCESSOR, successor_model

BIAS = 2.0   # small enough that the head still answers (the prompts pass the filter)


def test_paper_scores_add_the_value_bias_and_the_default_leaves_it_out(tmp_path):
    model = successor_model(tmp_path / "planted", value_bias=BIAS)
    task = make_task(model, TaskConfig(task="digits", template="bare", n_prompts=32, paper=True))
    layer, head = SUCCESSOR
    x = capture(model, task.clean_BT, ["blocks.0.hook_resid_post"])["blocks.0.hook_resid_post"][:, 1]
    diff = ov_outputs(model, x, layer, head, bias=True) - ov_outputs(model, x, layer, head, bias=False)
    want = torch.zeros(model.cfg.d_model)
    want[17] = BIAS   # the planted b_V W_O: digit 1's unembedding direction
    assert torch.allclose(diff, want.expand_as(diff), atol=1e-5)
    # with b_V the head also promotes "1": a copy exactly where the member is 1, and nowhere without b_V
    members = task.clean_BT[:, member_positions(model, task)]
    one = model.tokenizer.encode(" 1", add_special_tokens=False)[0]
    paper = {s.head: s for s in ov_scores_paper(model, task)}[f"a{layer}.h{head}"]
    assert paper.copy_score == pytest.approx(float((members == one).float().mean())) and paper.copy_score > 0
    assert paper.next_score == 1.0
    default = {s.head: s for s in ov_scores(model, "digits")}[f"a{layer}.h{head}"]
    assert default.copy_score == 0.0 and default.next_score == pytest.approx(1.0)


def test_paper_scores_read_the_prompts_layer0_residual_at_member_positions(tiny_b):
    task = make_task(tiny_b, TaskConfig(task="months", n_prompts=12, paper=True))
    pos = [i for i, t in enumerate(task.clean_BT[0].tolist()) if tiny_b.tokenizer.decode([t]).strip() in task.members]
    assert pos == member_positions(tiny_b, task) and len(pos) == 4
    store = {}
    with torch.no_grad(), tiny_b.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda a, hook: store.update(x=a))]):
        tiny_b(task.clean_BT)
    x = store["x"][:, pos].reshape(-1, tiny_b.cfg.d_model)
    cur = task.clean_BT[:, pos].flatten()
    month_ids = [tiny_b.tokenizer.encode(" " + m, add_special_tokens=False)[0] for m in task.members]
    nxt = torch.tensor([month_ids[month_ids.index(t) + 1] for t in cur.tolist()])
    got = {s.head: s for s in ov_scores_paper(tiny_b, task)}
    for layer, head in [(1, 7), (2, 1), (3, 0)]:
        attn, block = tiny_b.blocks[layer].attn, tiny_b.blocks[layer]
        with torch.no_grad():
            out = (block.ln1(x) @ attn.W_V[head] + attn.b_V[head]) @ attn.W_O[head]
            top = (tiny_b.ln_final(out) @ tiny_b.W_U + tiny_b.b_U).topk(5, -1).indices
        s = got[f"a{layer}.h{head}"]
        assert s.next_score == pytest.approx(float((top == nxt[:, None]).any(-1).float().mean()))
        assert s.copy_score == pytest.approx(float((top == cur[:, None]).any(-1).float().mean()))
    assert any(s.next_score > 0 for s in got.values())   # not a vacuous 0 = 0
