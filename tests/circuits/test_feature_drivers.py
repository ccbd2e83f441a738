"""What drives a feature (issue #32, part 3): the attribution is the directional derivative of the
feature's activation toward each component's mean (checked by finite differences), the exact
ablations are what ablating does, the input attribution likewise, and bad input is a clear error."""
import pytest
import torch

from sae_core.circuits.drivers import EMBED, _hook_of, feature_drivers, upstream
from sae_core.circuits.tasks import CircuitError
from sae_core.models.hooks import capture, patching
from sae_core.models.loading import to_tokens
from tests.helpers import firing_sae

HOOK = "blocks.1.hook_resid_post"
PROMPTS = ["March April May June", "one two three four five", "3 4 5 6"]


@pytest.fixture(scope="module")
def sae():
    return firing_sae(128, 32, HOOK, 0.5)  # features firing at the prompts' last tokens: a smooth metric


def _firing(model, sae, prompts) -> int:
    """The feature most active at the prompts' last tokens (the metric is then far from zero)."""
    ids = to_tokens(model, prompts)
    real = ids != model.tokenizer.pad_token_id
    real[:, 0] = True
    last = real.long().cumsum(1).argmax(1)
    with torch.no_grad():
        x = capture(model, ids, [HOOK])[HOOK]
        return int(sae.encode(x[torch.arange(len(last)), last]).sum(0).argmax())


def _metric(model, sae, f, ids, last, edits=None):
    with torch.no_grad(), patching(model, edits or {}):
        x = capture(model, ids, [HOOK])[HOOK]
    with torch.no_grad():
        return float(sae.encode(x[torch.arange(len(last)), last])[:, f].sum())


def test_upstream_components_by_hook(tiny_a):
    n = tiny_a.cfg.n_heads
    assert upstream(tiny_a, "blocks.1.hook_resid_post") == [f"a{L}.h{h}" for L in (0, 1) for h in range(n)] + ["m0", "m1"]
    assert upstream(tiny_a, "blocks.1.hook_resid_pre") == [f"a0.h{h}" for h in range(n)] + ["m0"]
    with pytest.raises(CircuitError, match="residual stream"):
        upstream(tiny_a, "blocks.1.attn.hook_z")


def test_attribution_is_the_derivative_toward_the_mean_and_exact_is_the_ablation(tiny_a, sae):
    f = _firing(tiny_a, sae, PROMPTS)
    d = feature_drivers(tiny_a, sae, HOOK, f, PROMPTS, validate=4)
    assert d.metric > 1 and sum(abs(c.attribution) > 1e-3 for c in d.components) >= 4
    ids = to_tokens(tiny_a, PROMPTS)
    real = ids != tiny_a.tokenizer.pad_token_id
    real[:, 0] = True
    last = real.long().cumsum(1).argmax(1)
    assert d.metric == pytest.approx(_metric(tiny_a, sae, f, ids, last), rel=1e-5)
    keep = real.clone()
    keep[:, 0] = False  # the BOS is never ablated
    with torch.no_grad():
        acts = capture(tiny_a, ids, [_hook_of(c.node) for c in d.components])
    by, checked = {c.node: c for c in d.components}, []
    for node in [c.node for c in d.components[:3]] + ["m0", "a0.h2"]:
        h = _hook_of(node)
        a = acts[h][:, :, int(node.split(".h")[1])] if node.startswith("a") else acts[h]
        mean = a[keep].double().mean(0).float()

        def toward(eps, node=node, mean=mean):  # c + eps (mean - c) at the kept positions
            def edit(x):
                out = x.clone()
                sl = out[:, :, int(node.split(".h")[1])] if node.startswith("a") else out
                sl[keep] = sl[keep] + eps * (mean - sl[keep])
                return out
            return {_hook_of(node): edit}
        eps = 1e-2
        fd = (_metric(tiny_a, sae, f, ids, last, toward(-eps)) - _metric(tiny_a, sae, f, ids, last, toward(eps))) / (2 * eps)
        assert by[node].attribution == pytest.approx(fd, rel=2e-2, abs=1e-4), node
        checked.append(abs(fd))
    assert max(checked) > 1e-2  # derivatives far from zero were checked
    for c in d.components[:4]:  # the validated ones: exact = m(clean) - m(mean-ablated)
        assert c.exact == pytest.approx(d.metric - _metric(tiny_a, sae, f, ids, last,
                                                           _ablate(acts, c.node, keep)), rel=1e-5, abs=1e-6)
    assert all(c.exact is None for c in d.components[4:]) and d.n_validated == 4
    assert [abs(c.attribution) for c in d.components] == sorted((abs(c.attribution) for c in d.components), reverse=True)


def _ablate(acts, node, keep):
    h = _hook_of(node)
    head = int(node.split(".h")[1]) if node.startswith("a") else None
    a = acts[h] if head is None else acts[h][:, :, head]
    mean = a[keep].double().mean(0).float()

    def edit(x):
        out = x.clone()
        sl = out if head is None else out[:, :, head]
        sl[keep] = mean
        return out
    return {h: edit}


def test_input_attribution_sums_to_the_embedding_derivative(tiny_a, sae):
    f = _firing(tiny_a, sae, PROMPTS[:1])
    d = feature_drivers(tiny_a, sae, HOOK, f, PROMPTS[:1], validate=0)
    ids = to_tokens(tiny_a, PROMPTS[:1])
    last = torch.tensor([ids.shape[1] - 1])
    with torch.no_grad():
        emb = capture(tiny_a, ids, [EMBED])[EMBED]
    mean = emb[0, 1:].mean(0)

    def toward(eps):
        def edit(x):
            out = x.clone()
            out[:, 1:] = out[:, 1:] + eps * (mean - out[:, 1:])
            return out
        return {EMBED: edit}
    eps = 1e-2
    fd = (_metric(tiny_a, sae, f, ids, last, toward(-eps)) - _metric(tiny_a, sae, f, ids, last, toward(eps))) / (2 * eps)
    assert abs(fd) > 1e-2 and sum(d.positions[0]) == pytest.approx(fd, rel=2e-2, abs=1e-4)
    assert len(d.positions[0]) == len(d.tokens[0]) == ids.shape[1] - 1 and d.spearman is None


def test_bad_input(tiny_a, sae):
    with pytest.raises(CircuitError, match="feature 32 is out of range"):
        feature_drivers(tiny_a, sae, HOOK, 32, PROMPTS)
    with pytest.raises(CircuitError, match="non-empty prompts"):
        feature_drivers(tiny_a, sae, HOOK, 1, [" "])
