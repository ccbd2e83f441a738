"""SAE features inside a circuit: the splice leaves the model's output unchanged, and a feature's
attribution is the derivative of the logit difference along that feature (finite differences)."""
import pytest
import torch

from sae_core.circuits.features import feature_attributions, hooks_for, spliced_metric
from sae_core.circuits.metrics import logit_diff
from sae_core.circuits.tasks import CircuitError, TaskConfig, make_task
from sae_core.sae.config import SAEConfig
from sae_core.sae.registry import create_sae

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def setup(tiny_b):
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="topk", d_in=256, d_sae=512, k=16, model_name="zoo:tiny-b", hook_name=HOOK))
    return make_task(tiny_b, TaskConfig(task="digits", n_prompts=16)), sae


def test_splice_keeps_the_models_output(tiny_b, setup):
    task, sae = setup
    value, z = spliced_metric(tiny_b, task, sae, HOOK, grad=False)
    with torch.no_grad():
        clean = logit_diff(tiny_b(task.clean_BT)[:, -1], task.answer_B, task.distractor_B).mean()
    assert float(value) == pytest.approx(float(clean), abs=1e-4)
    assert z.shape == (task.clean_BT.numel(), 512) and ((z > 0).sum(1) <= 16).all()


def test_attribution_is_the_derivative_along_each_feature(tiny_b, setup):
    task, sae = setup
    top = feature_attributions(tiny_b, task, sae, HOOK, top=3)
    assert len(top) == 3 and abs(top[0].score) >= abs(top[1].score) >= abs(top[2].score) > 0
    base, _ = spliced_metric(tiny_b, task, sae, HOOK, grad=False)
    eps = 1e-2
    for f in top:
        scale = torch.ones(task.clean_BT.numel(), 512)
        not_bos = task.clean_BT.reshape(-1) != tiny_b.tokenizer.bos_token_id
        scale[not_bos, f.feature] = 1 - eps   # as the attribution, which leaves BOS out
        moved, _ = spliced_metric(tiny_b, task, sae, HOOK, scale, grad=False)
        assert (float(base) - float(moved)) / eps == pytest.approx(f.score, rel=0.1, abs=1e-3)
        assert f.fires > 0 and f.mean_act > 0


def test_wrong_width_and_hook_mapping(tiny_b, setup):
    task, sae = setup
    with pytest.raises(CircuitError, match="reads 256 dimensions"):
        feature_attributions(tiny_b, task, sae, "blocks.1.mlp.hook_post")
    assert hooks_for("m2") == ["blocks.2.hook_mlp_out", "blocks.2.hook_resid_post"]
    assert hooks_for("a1.h3") == ["blocks.1.attn.hook_z", "blocks.1.hook_resid_post"]
    assert hooks_for("logits") == []
