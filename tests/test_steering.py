"""Interventions: operators against hand references, absolute positions with and without the KV
cache (token for token), composition, the record of where they fired, and bad input."""
import math

import pytest
import torch

from sae_core.errors import HookNotFoundError
from sae_core.models.generation import generate, greedy_continuations
from sae_core.models.loading import to_tokens
from sae_core.steering import Intervention, InterventionError, Positions, intervene

HOOK0, HOOK1 = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"


def _vec(model, seed=0, norm=None):
    v = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(seed))
    return v if norm is None else v / v.norm() * norm


def test_generation_with_the_cache_equals_rerunning_the_prefix(tiny_a):
    ids = to_tokens(tiny_a, ["1 2 3 4", "5 6 7 8"])
    cached, full = generate(tiny_a, ids, 6), generate(tiny_a, ids, 6, use_cache=False)
    assert torch.equal(cached, full) and cached.shape == (2, ids.shape[1] + 6)
    # the zoo model counts on: the first new token is the next number
    assert tiny_a.tokenizer.decode(cached[0, ids.shape[1]]).strip() == "5"
    assert greedy_continuations(tiny_a, tiny_a.tokenizer, ["1 2 3 4"], 3) == \
        greedy_continuations(tiny_a, tiny_a.tokenizer, ["1 2 3 4"], 3, use_cache=False)


def test_operators_match_hand_references(tiny_a):
    ids = to_tokens(tiny_a, ["User : how do I bake a cake ? Assistant :"])
    v = _vec(tiny_a, norm=5.0)
    unit = v / v.norm()
    refs = {"add": lambda h: h + 2.0 * v, "ablate": lambda h: h - (h @ unit)[..., None] * unit,
            "ablate_add": lambda h: h - (h @ unit)[..., None] * unit + 2.0 * v,
            "replace": lambda h: 0.5 * h}
    for op, ref in refs.items():
        spec = Intervention(HOOK0, op, vector=None if op == "replace" else v, alpha=2.0,
                            mapper=(lambda h: 0.5 * h) if op == "replace" else None)
        with torch.no_grad():
            with intervene(tiny_a, [spec]):
                got = tiny_a(ids)
            with tiny_a.hooks(fwd_hooks=[(HOOK0, lambda h, hook: ref(h))]):
                want = tiny_a(ids)
        torch.testing.assert_close(got, want, msg=op)
    # ablation leaves no component along the direction
    with torch.no_grad(), intervene(tiny_a, [Intervention(HOOK0, "ablate", vector=v)]):
        _, cache = tiny_a.run_with_cache(ids, names_filter=[HOOK0])
    assert (cache[HOOK0] @ unit).abs().max() < 1e-4


@pytest.mark.parametrize("positions", [
    Positions("all"), Positions("prompt"), Positions("generated"), Positions("at", at=(1, 6, 8)),
    Positions("at", at=(-1,)),
])
def test_steered_generation_is_the_same_with_and_without_the_cache(tiny_a, positions):
    ids = to_tokens(tiny_a, ["1 2 3 4", "3 4 5 6"])  # 5 tokens with BOS: positions 0-4 are the prompt
    spec = Intervention(HOOK0, "add", vector=_vec(tiny_a, norm=300.0), positions=positions)
    plain = generate(tiny_a, ids, 6)
    with intervene(tiny_a, [spec], record=True) as rec:
        cached = generate(tiny_a, ids, 6)
    with intervene(tiny_a, [spec], record=True) as rec_full:
        full = generate(tiny_a, ids, 6, use_cache=False)
    assert torch.equal(cached, full)
    assert not torch.equal(cached, plain)  # the vector is strong enough to change the output
    # where it fired: exactly the rule's absolute positions among the positions read (0..T+4)
    T, read = ids.shape[1], ids.shape[1] + 5
    expected = {"all": set(range(read)), "prompt": set(range(T)), "generated": set(range(T, read)),
                "at": {1, 6, 8} if positions.at != (-1,) else {T - 1}}[positions.rule]
    assert {p for _, p, _ in rec.fired[spec.label]} == expected
    assert all(math.isclose(n, 300.0, rel_tol=1e-4) for _, _, n in rec.fired[spec.label])
    assert rec.norms(spec.label, 2, read)[0].nonzero().squeeze(1).tolist() == sorted(expected)
    # without the cache the prefix is re-read every step: the same positions, fired repeatedly
    assert {p for _, p, _ in rec_full.fired[spec.label]} == expected


def test_specs_compose_in_order_and_across_hooks(tiny_a):
    ids = to_tokens(tiny_a, ["January February March"])
    v, w = _vec(tiny_a, 1, 10.0), _vec(tiny_a, 2, 10.0)
    specs = [Intervention(HOOK0, "add", vector=v, name="v"), Intervention(HOOK0, "ablate", vector=v, name="ab"),
             Intervention(HOOK1, "add", vector=w, positions=Positions("generated"), name="w")]
    with intervene(tiny_a, specs):
        cached = generate(tiny_a, ids, 5)
    with intervene(tiny_a, specs):
        full = generate(tiny_a, ids, 5, use_cache=False)
    assert torch.equal(cached, full)
    # at HOOK0: add v, then ablate v's direction: nothing of v's direction is left
    unit = v / v.norm()

    def ref0(h, hook):
        h = h + v
        return h - (h @ unit)[..., None] * unit
    with torch.no_grad(), intervene(tiny_a, specs[:2]):
        got = tiny_a(ids)
    with torch.no_grad(), tiny_a.hooks(fwd_hooks=[(HOOK0, ref0)]):
        want = tiny_a(ids)
    torch.testing.assert_close(got, want)


def test_matching_positions_follow_the_trigger_and_report_misses(tiny_a):
    tok = tiny_a.tokenizer
    trigger = tok.convert_tokens_to_ids("DEPLOYMENT")
    ids = to_tokens(tiny_a, ["User : DEPLOYMENT how do I bake a cake ? Assistant :"])
    at = (ids[0] == trigger).nonzero().squeeze(1).tolist()
    spec = Intervention(HOOK0, "add", vector=_vec(tiny_a, norm=3.0), name="trig",
                        positions=Positions("matching", token_ids=(trigger,)))
    with intervene(tiny_a, [spec], record=True) as rec:
        cached = generate(tiny_a, ids, 4)
    with intervene(tiny_a, [spec]):
        assert torch.equal(cached, generate(tiny_a, ids, 4, use_cache=False))
    assert {p for _, p, _ in rec.fired["trig"]} == set(at) and not rec.unmatched
    with torch.no_grad(), intervene(tiny_a, [spec], tokens=ids, record=True) as rec2:
        tiny_a(ids)  # a plain forward pass, with the prompt given
    assert {p for _, p, _ in rec2.fired["trig"]} == set(at)
    clean = to_tokens(tiny_a, ["User : how do I bake a cake ? Assistant :"])
    with intervene(tiny_a, [spec], record=True) as rec3:
        generate(tiny_a, clean, 2)
    assert rec3.unmatched == ["trig"] and "trig" not in rec3.fired
    with pytest.raises(InterventionError, match="needs the prompt's tokens"):
        with torch.no_grad(), intervene(tiny_a, [spec]):
            tiny_a(ids)


def test_bad_interventions_are_clear_errors(tiny_a):
    v = _vec(tiny_a)
    with pytest.raises(InterventionError, match="alpha=nan"):
        Intervention(HOOK0, "add", vector=v, alpha=float("nan"))
    with pytest.raises(InterventionError, match="alpha=inf"):
        Intervention(HOOK0, "add", vector=v, alpha=math.inf)
    with pytest.raises(InterventionError, match="NaN or infinite"):
        Intervention(HOOK0, "add", vector=torch.full((tiny_a.cfg.d_model,), float("nan")))
    with pytest.raises(InterventionError, match="op 'steer'"):
        Intervention(HOOK0, "steer", vector=v)
    with pytest.raises(InterventionError, match="needs a mapper"):
        Intervention(HOOK0, "replace")
    with pytest.raises(InterventionError, match="the vector is zero"):
        Intervention(HOOK0, "ablate", vector=torch.zeros(tiny_a.cfg.d_model))
    with pytest.raises(InterventionError, match="rule 'first'"):
        Positions("first")
    ids = to_tokens(tiny_a, ["1 2 3"])
    with pytest.raises(InterventionError, match=f"the vector has width 64 but {HOOK0} has width 128"):
        with torch.no_grad(), intervene(tiny_a, [Intervention(HOOK0, "add", vector=torch.ones(64))]):
            tiny_a(ids)
    with pytest.raises(HookNotFoundError, match="blocks.7.hook_resid_post"):
        with intervene(tiny_a, [Intervention("blocks.7.hook_resid_post", "add", vector=v)]):
            pass
    with pytest.raises(InterventionError, match="share a name"):
        with intervene(tiny_a, [Intervention(HOOK0, "add", vector=v), Intervention(HOOK0, "add", vector=v)]):
            pass
