"""Steering with SAE features (issue #32, part 1): adding a decoder row and clamping through the spliced
SAE against references written here, the unclamped SAE bit for bit, batched columns against single
generations without the KV cache, and each bad input as a clear error."""
import math

import numpy as np
import pytest
import torch

from sae_core.errors import SAECoreError
from sae_core.models.generation import generate
from sae_core.models.loading import to_tokens
from sae_core.sae.config import SAEConfig
from sae_core.sae.registry import create_sae
from sae_core.steering.feature_edits import (Clamp, FeatureEdit, check_sae_fits, feature_interventions,
                                             steer_columns, watch_features)
from sae_core.steering.interventions import Intervention, InterventionError, Positions, intervene

HOOK = "blocks.1.hook_resid_post"  # zoo:tiny-a's last block: an edit there reaches the logits directly
PROMPT = "March April May June"


def _sae(arch="relu", d_sae=48, hook=HOOK, d_in=128, seed=0):
    torch.manual_seed(seed)
    sae = create_sae(SAEConfig(arch=arch, d_in=d_in, d_sae=d_sae, k=4, model_name="zoo:tiny-a", hook_name=hook))
    with torch.no_grad():  # feature 0 never fires; the others spread from rare to common
        sae.b_enc.copy_(torch.linspace(-1.5, 0.5, d_sae))
        sae.b_enc[0] = -1e4
    return sae.eval()


@pytest.fixture(scope="module")
def sae():
    return _sae()


def _logits(model, specs, ids):
    with torch.no_grad(), intervene(model, specs, tokens=ids):
        return model(ids)


def test_an_sae_spliced_with_nothing_clamped_leaves_the_model_bit_for_bit(tiny_a, sae):
    ids = to_tokens(tiny_a, [PROMPT, "one two three four"])
    plain = _logits(tiny_a, [], ids)
    spliced = Intervention(HOOK, "replace", mapper=Clamp(sae, [], []), name="spliced")
    assert torch.equal(_logits(tiny_a, [spliced], ids), plain)
    # a clamp to 0 of a feature that never fires changes nothing either, bit for bit; to 0.5 it does
    assert torch.equal(_logits(tiny_a, feature_interventions(sae, HOOK, [FeatureEdit(0, "clamp", 0.0)]), ids), plain)
    assert not torch.equal(_logits(tiny_a, feature_interventions(sae, HOOK, [FeatureEdit(0, "clamp", 0.5)]), ids),
                           plain)
    with torch.no_grad(), intervene(tiny_a, [spliced]):
        assert torch.equal(generate(tiny_a, ids[:1], 8), generate(tiny_a, ids[:1], 8))


def test_clamp_is_the_spliced_sae_with_its_error_term_numpy_reference(sae):
    x = torch.randn(2, 5, 128, generator=torch.Generator().manual_seed(3)) * 3
    feats, vals = [3, 40], [7.0, 0.0]
    out = Clamp(sae, feats, vals)(x).numpy().astype(np.float64)
    W_enc, b_enc, W_dec, b_dec = (t.detach().double().numpy() for t in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    xn = x.double().numpy().reshape(-1, 128)
    z = np.maximum((xn - b_dec) @ W_enc + b_enc, 0)
    z2 = z.copy()
    z2[:, feats] = vals
    ref = (z2 @ W_dec + b_dec) + (xn - (z @ W_dec + b_dec))  # decode(z') + error term
    assert np.abs(out.reshape(-1, 128) - ref).max() < 1e-4
    assert (z[:, 40] > 0).any() and (z[:, 3] != 7).all()  # both clamps change something


def test_add_moves_along_the_decoder_row_everywhere_but_the_bos(tiny_a, sae):
    ids = to_tokens(tiny_a, PROMPT)
    alpha, f = 2.5, 7
    w = sae.W_dec[f].detach()

    def manual(h, hook=None):
        h = h.clone()
        h[:, 1:] += alpha * w
        return h
    with torch.no_grad(), tiny_a.hooks(fwd_hooks=[(HOOK, manual)]):
        ref = tiny_a(ids)
    got = _logits(tiny_a, feature_interventions(sae, HOOK, [FeatureEdit(f, "add", alpha)]), ids)
    assert torch.allclose(got, ref, atol=1e-5)
    plain = _logits(tiny_a, [], ids)
    assert torch.equal(got[:, 0], plain[:, 0]) and not torch.allclose(got[:, 1:], plain[:, 1:])


def test_adding_a_feature_raises_the_token_it_promotes(tiny_a, sae):
    from sae_core.models.unembed import unembed_through_final_norm

    M = unembed_through_final_norm(tiny_a)
    ids = to_tokens(tiny_a, PROMPT)
    plain = torch.log_softmax(_logits(tiny_a, [], ids)[0, -1], -1)
    for f in (5, 20, 33):
        top = int((sae.W_dec[f].detach() @ M).argmax())  # its direct logit effect's top token
        up = torch.log_softmax(_logits(tiny_a, feature_interventions(sae, HOOK, [FeatureEdit(f, "add", 8.0)]),
                                       ids)[0, -1], -1)
        down = torch.log_softmax(_logits(tiny_a, feature_interventions(sae, HOOK, [FeatureEdit(f, "add", -8.0)]),
                                         ids)[0, -1], -1)
        assert down[top] < plain[top] < up[top], f


def test_watch_reads_activations_before_the_edits(tiny_a, sae):
    from sae_core.features.probe import feature_acts_on_text

    f = 30
    cols, read = steer_columns(tiny_a, sae, HOOK, PROMPT, {"plain": (), "clamped": (FeatureEdit(f, "clamp", 9.0),)},
                               watch=f, n_tokens=4)
    plain, clamped = cols
    n = plain.n_prompt
    probe = feature_acts_on_text(tiny_a, sae, HOOK, PROMPT, f)
    # at the hook, the prompt's activations do not depend on an edit at that hook: both columns read
    # what the index reads, and not the clamped 9
    assert np.allclose(plain.acts[:n], probe.acts, atol=1e-5) and np.allclose(clamped.acts[:n], probe.acts, atol=1e-5)
    assert all(clamped.edited[:n]) and not any(plain.edited)
    assert plain.tokens[:n] == probe.tokens and read.n_read == n


def test_columns_equal_single_generations_without_the_cache(tiny_a, sae):
    edits = {"plain": (), "add": (FeatureEdit(11, "add", 40.0), FeatureEdit(12, "add", 40.0)),
             "clamp": (FeatureEdit(30, "clamp", 0.0), FeatureEdit(45, "clamp", 60.0))}
    cols, _ = steer_columns(tiny_a, sae, HOOK, PROMPT, edits, watch=30, positions=Positions("generated"), n_tokens=6)
    ids = to_tokens(tiny_a, PROMPT)
    for col in cols:
        with torch.no_grad(), intervene(tiny_a, feature_interventions(sae, HOOK, edits[col.label],
                                                                      Positions("generated"))):
            ref = generate(tiny_a, ids, 6, use_cache=False)
        assert col.text == tiny_a.tokenizer.decode(ref[0, ids.shape[1]:], skip_special_tokens=True), col.label
        assert not any(col.edited[:col.n_prompt])  # "generated": the prompt is left alone
    assert len({c.text for c in cols}) > 1  # the edits change what is generated


def test_bad_input_is_a_clear_error(tiny_a, sae):
    with pytest.raises(SAECoreError, match="feature 48 is out of range: this SAE has features 0..47"):
        feature_interventions(sae, HOOK, [FeatureEdit(48, "clamp", 1.0)])
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(InterventionError, match="clamp value .* is not a finite number"):
            FeatureEdit(3, "clamp", bad)
    with pytest.raises(InterventionError, match="alpha nan for feature 3 is not a finite number"):
        FeatureEdit(3, "add", math.nan)
    with pytest.raises(InterventionError, match="clamped twice"):
        feature_interventions(sae, HOOK, [FeatureEdit(3, "clamp", 1.0), FeatureEdit(3, "clamp", 2.0)])
    with pytest.raises(InterventionError, match="trained at blocks.0.hook_resid_post, not blocks.1.hook_resid_post"):
        check_sae_fits(tiny_a, _sae(hook="blocks.0.hook_resid_post"), HOOK)
    with pytest.raises(InterventionError, match="reads d_in=64, but blocks.1.hook_resid_post of this model has "
                                                "width 128"):
        check_sae_fits(tiny_a, _sae(d_in=64), HOOK)
    with pytest.raises(SAECoreError, match="feature 99 is out of range"):
        steer_columns(tiny_a, sae, HOOK, PROMPT, {"plain": ()}, watch=99)


def test_watch_hook_order_is_the_order_of_entry(tiny_a, sae):
    """``watch_features`` relies on hooks at one point running in the order they were added."""
    seen = []
    with torch.no_grad(), tiny_a.hooks(fwd_hooks=[(HOOK, lambda h, hook=None: seen.append("outer") or h)]), \
            tiny_a.hooks(fwd_hooks=[(HOOK, lambda h, hook=None: seen.append("inner") or h)]):
        tiny_a(to_tokens(tiny_a, PROMPT))
    assert seen == ["outer", "inner"]
    with watch_features(tiny_a, sae, HOOK, [3]) as trace:
        tiny_a(to_tokens(tiny_a, PROMPT))
    assert trace.values(3, 1, 5).shape == (1, 5)
