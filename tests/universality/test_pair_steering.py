"""Steering two models through a matched pair (issue #32, part 4): a model against itself through one
feature moves alike (similarity 1, beating every random pair), each effect is the log-prob change a
hook written here gives, and bad input is a clear error."""
import math

import pytest
import torch

from sae_core.models.hooks import capture
from sae_core.models.loading import keep_mask_BT, to_tokens
from sae_core.universality.measures import UniversalityError
from sae_core.universality.pair_steering import _cosine, steer_pair
from tests.helpers import firing_sae

HOOK = "blocks.1.hook_resid_post"
TEXTS = ["March April May June July", "one two three four five six", "the cat sat on the mat"]


@pytest.fixture(scope="module")
def sae():
    return firing_sae(128, 16, HOOK, 0.3)  # every feature fires somewhere on the texts


def test_a_model_against_itself_moves_alike(tiny_a, sae):
    pairs = [(f, f) for f in range(10)]
    e = steer_pair(tiny_a, sae, HOOK, tiny_a, sae, HOOK, pairs, 3, fraction=3.0, runs=20, texts=TEXTS)
    assert e.similarity == pytest.approx(1.0, abs=1e-9) and max(e.null) < 0.999
    assert e.p == pytest.approx(1 / 21) and e.z > 0 and (e.a, e.b) == (3, 3)
    assert e.raised_a == e.raised_b and e.strength_a == e.strength_b


def test_the_effect_is_the_log_prob_change_of_the_added_row(tiny_a, tiny_b, sae):
    sae_b = firing_sae(256, 16, "blocks.3.hook_resid_post", 0.3, seed=1)
    pairs = [(1, 2), (4, 5), (6, 7), (8, 9)]
    e = steer_pair(tiny_a, sae, HOOK, tiny_b, sae_b, "blocks.3.hook_resid_post", pairs, 0, fraction=2.0, runs=6,
                   texts=TEXTS)
    ids = to_tokens(tiny_a, TEXTS)
    tok = tiny_a.tokenizer
    keep = keep_mask_BT(ids, tok.pad_token_id, sorted(set(tok.all_special_ids)), True)

    def effect(model, s, hook, f):
        with torch.no_grad():
            x = capture(model, ids, [hook])[hook]
            z = s.encode(x[keep])[:, f]
            typical = float(z[z > 0].mean())
            row = 2.0 * typical * s.W_dec[f]

            def add(a, hook=None):
                out = a.clone()
                out[keep] += row
                return out
            clean = torch.log_softmax(model(ids), -1)[keep]
            with model.hooks(fwd_hooks=[(hook, add)]):
                d = torch.log_softmax(model(ids), -1)[keep] - clean
        return typical, d - d.mean(-1, keepdim=True)
    ta, ea = effect(tiny_a, sae, HOOK, 1)
    tb, eb = effect(tiny_b, sae_b, "blocks.3.hook_resid_post", 2)
    assert e.strength_a == pytest.approx(2 * ta, rel=1e-5) and e.strength_b == pytest.approx(2 * tb, rel=1e-5)
    assert e.similarity == pytest.approx(_cosine(ea, eb), abs=1e-5)
    assert e.n_positions == int(keep.sum()) and len(e.null) == 6 and 0 < e.p <= 1


def test_bad_input(tiny_a, tiny_l, sae):
    pairs = [(f, f) for f in range(5)]
    with pytest.raises(UniversalityError, match="pair 5 does not exist: this result has pairs 0..4"):
        steer_pair(tiny_a, sae, HOOK, tiny_a, sae, HOOK, pairs, 5, texts=TEXTS)
    for bad in (math.nan, 0.0):
        with pytest.raises(UniversalityError, match="give a finite, non-zero multiple"):
            steer_pair(tiny_a, sae, HOOK, tiny_a, sae, HOOK, pairs, 0, fraction=bad, texts=TEXTS)
    with pytest.raises(UniversalityError, match="runs=1: a null needs at least 2 random pairs"):
        steer_pair(tiny_a, sae, HOOK, tiny_a, sae, HOOK, pairs, 0, runs=1, texts=TEXTS)
    with pytest.raises(UniversalityError):  # another tokenizer: the prompts would not be the same tokens
        steer_pair(tiny_a, sae, HOOK, tiny_l, sae, HOOK, pairs, 0, texts=TEXTS)
    dead = firing_sae(128, 16, HOOK, -1e4)
    with pytest.raises(UniversalityError, match="never fires on the shared prompts"):
        steer_pair(tiny_a, dead, HOOK, tiny_a, sae, HOOK, pairs, 0, texts=TEXTS)
