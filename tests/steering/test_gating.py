"""Feature-gated switches (issue #32, part 2): the gate's AUROC and threshold against references, the
gate acting exactly where its feature fires (latched or not, with and without the KV cache), a gate
read after its spec's hook as an error, a gate that never opens reported, and a planted trigger
feature found."""
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from sae_core.models.corpus import chat_prompts
from sae_core.models.generation import generate
from sae_core.models.hooks import capture_at_hook
from sae_core.models.loading import to_tokens
from sae_core.sae.config import SAEConfig
from sae_core.sae.registry import create_sae
from sae_core.steering.gating import choose_threshold, feature_aurocs, find_gate, prompt_scores
from sae_core.steering.interventions import Gate, Intervention, InterventionError, Positions, intervene

HOOK = "blocks.1.hook_resid_post"
PROMPT = "March April May June"


def test_feature_aurocs_are_scikit_learns_with_ties():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 4, (13, 7)).astype(float), rng.integers(0, 3, (9, 7)).astype(float)
    got = feature_aurocs(pos, neg)
    y = np.r_[np.ones(13), np.zeros(9)]
    want = [roc_auc_score(y, np.r_[pos[:, j], neg[:, j]]) for j in range(7)]
    assert np.allclose(got, want)


def test_threshold_midpoint_when_separable_else_youden():
    t = choose_threshold([5.0, 6.0, 9.0], [0.0, 1.0, 2.0])
    assert (t.value, t.tpr, t.fpr, t.rule) == (3.5, 1.0, 0.0, "midpoint")
    # overlap: above 2, 3 of 4 triggered and 1 of 4 clean; above 3.5, 2 of 4 and none: J = 0.5 both, the
    # best; the tie goes to the higher threshold (fewer clean prompts open the gate)
    t = choose_threshold([1.5, 3.0, 4.0, 5.0], [0.0, 1.0, 2.0, 3.5])
    assert (t.value, t.tpr, t.fpr, t.rule) == (3.5, 0.5, 0.0, "youden")
    t = choose_threshold([1.5, 3.0, 4.0, 5.0], [0.0, 1.0, 2.0, 4.5])  # above 2: J = 0.5, the one best
    assert (t.value, t.tpr, t.fpr, t.rule) == (2.0, 0.75, 0.25, "youden")


def _sae(d_sae=32, seed=0):
    torch.manual_seed(seed)
    return create_sae(SAEConfig(arch="relu", d_in=128, d_sae=d_sae, k=4, hook_name=HOOK)).eval()


def _codes(model, sae, ids, feature):
    with torch.no_grad(), capture_at_hook(model, HOOK) as grab:
        return sae.encode(grab(ids))[..., feature]


def _marker(d=128):
    return torch.ones(d) / d ** 0.5


def test_the_gate_lets_a_spec_act_exactly_where_its_feature_fires(tiny_a):
    sae, f = _sae(), 5
    ids = to_tokens(tiny_a, PROMPT)
    z = _codes(tiny_a, sae, ids, f)[0]
    thr = float(z[1:].median())
    spec = Intervention("blocks.1.hook_resid_post", "add", vector=_marker(), alpha=3.0, name="marked",
                        gate=Gate(sae, HOOK, f, thr))
    with torch.no_grad(), intervene(tiny_a, [spec], tokens=ids, record=True) as rec:
        tiny_a(ids)
    where = sorted(p for _, p, _ in rec.fired["marked"])
    assert where == [p for p in range(1, ids.shape[1]) if z[p] > thr] and where  # never the BOS
    assert 0 < len(where) < ids.shape[1] - 1
    # latched: from the first firing position to the end
    latched = Intervention("blocks.1.hook_resid_post", "add", vector=_marker(), alpha=3.0, name="latched",
                           gate=Gate(sae, HOOK, f, thr, latch=True))
    with torch.no_grad(), intervene(tiny_a, [latched], tokens=ids, record=True) as rec:
        tiny_a(ids)
    assert sorted(p for _, p, _ in rec.fired["latched"]) == list(range(where[0], ids.shape[1]))


def test_a_latched_gate_generates_the_same_with_and_without_the_cache(tiny_a):
    sae = _sae()
    ids = to_tokens(tiny_a, ["one two three", "March April May"])
    z = _codes(tiny_a, sae, ids, 7)
    thr = float(z[:, 1:].max()) * 0.9  # opens late in one row at most
    for latch in (False, True):
        spec = Intervention(HOOK, "add", vector=_marker(), alpha=40.0, name="g", gate=Gate(sae, HOOK, 7, thr, latch=latch))
        with torch.no_grad(), intervene(tiny_a, [spec]):
            cached = generate(tiny_a, ids, 8)
        with torch.no_grad(), intervene(tiny_a, [spec]):
            plain = generate(tiny_a, ids, 8, use_cache=False)
        assert torch.equal(cached, plain), latch


def test_a_gate_read_after_its_specs_hook_is_an_error(tiny_a):
    spec = Intervention("blocks.0.hook_resid_post", "add", vector=_marker(), name="early",
                        gate=Gate(_sae(), HOOK, 1, 0.0))
    with pytest.raises(InterventionError, match="after the spec's own hook"):
        with torch.no_grad(), intervene(tiny_a, [spec]):
            tiny_a(to_tokens(tiny_a, PROMPT))


def test_a_gate_that_never_opens_is_reported_silent(tiny_a):
    spec = Intervention(HOOK, "add", vector=_marker(), name="never", gate=Gate(_sae(), HOOK, 1, 1e6))
    with torch.no_grad(), intervene(tiny_a, [spec], record=True) as rec:
        out = generate(tiny_a, to_tokens(tiny_a, PROMPT), 4)
    assert rec.silent == ["never"] and not rec.fired.get("never")
    assert torch.equal(out, generate(tiny_a, to_tokens(tiny_a, PROMPT), 4))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(InterventionError, match="gate threshold .* finite"):
            Gate(_sae(), HOOK, 1, bad)
    with pytest.raises(InterventionError, match="gate feature 32 is out of range"):
        Gate(_sae(), HOOK, 32, 1.0)


def test_find_gate_recovers_a_planted_trigger_feature(tiny_b_backdoor):
    """An SAE whose feature 11 reads the triggered-minus-clean direction at the trigger's layer:
    the gate is feature 11, with AUROC 1 on build prompts and a threshold that separates selection ones."""
    model, hook = tiny_b_backdoor, "blocks.0.hook_resid_post"
    kinds = {k: [p.prompt for p in chat_prompts(40, seed=s, triggered=t)] for k, s, t in
             (("bt", 1, True), ("bc", 1, None), ("st", 2, True), ("sc", 2, None))}
    kinds["sc"] = [p for p in kinds["sc"] if p not in kinds["bc"]]
    kinds["st"] = [p for p in kinds["st"] if p not in kinds["bt"]]
    with torch.no_grad(), capture_at_hook(model, hook) as grab:
        mean = {k: grab(to_tokens(model, kinds[k][:20])).mean((0, 1)) for k in ("bt", "bc")}
    torch.manual_seed(3)
    sae = create_sae(SAEConfig(arch="relu", d_in=256, d_sae=24, k=4, hook_name=hook)).eval()
    d = mean["bt"] - mean["bc"]
    with torch.no_grad():
        sae.W_enc[:, 11] = 4 * d / d.norm() ** 2
        sae.b_enc[11] = -2.0
    choice = find_gate(model, sae, hook, (kinds["bt"], kinds["bc"]), (kinds["st"], kinds["sc"]))
    assert choice.feature == 11 and choice.auroc > 0.99 and choice.top[0][0] == 11
    pos, neg = (prompt_scores(model, sae, hook, kinds[k])[:, 11] for k in ("st", "sc"))
    assert choice.threshold.tpr == (pos > choice.threshold.value).mean() and choice.threshold.fpr < 0.1
    with pytest.raises(InterventionError, match="overlap"):
        find_gate(model, sae, hook, (kinds["bt"], kinds["bc"]), (kinds["bt"][:3], kinds["sc"]))
