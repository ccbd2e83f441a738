"""Interventions: operators against hand references, absolute positions with and without the KV
cache (token for token), composition, the record of where they fired, and bad input."""
import dataclasses
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


def test_row_limited_specs_act_on_their_rows_only(tiny_a):
    """Several conditions in one batched generation (the page's columns): row i under spec i alone
    equals generating that row by itself under the unlimited spec."""
    ids = to_tokens(tiny_a, ["1 2 3 4"])
    specs = [Intervention(HOOK0, "add", vector=_vec(tiny_a, seed=s, norm=300.0), name=f"v{s}") for s in (1, 2)]
    alone = [generate(tiny_a, ids, 6)] + [_steered(tiny_a, ids, [s]) for s in specs]
    assert not torch.equal(alone[0], alone[1]) and not torch.equal(alone[1], alone[2])  # each one steers
    rowed = [dataclasses.replace(s, rows=(i + 1,)) for i, s in enumerate(specs)]  # row 0 left plain
    with intervene(tiny_a, rowed, record=True) as rec:
        batched = generate(tiny_a, ids.expand(3, -1), 6)
    for row in range(3):
        assert torch.equal(batched[row], alone[row][0]), row
    assert {r for r, _, _ in rec.fired["v1"]} == {1} and {r for r, _, _ in rec.fired["v2"]} == {2}
    with pytest.raises(InterventionError, match=r"acts on batch rows \[3\], but this pass has 3 row"):
        with torch.no_grad(), intervene(tiny_a, [dataclasses.replace(specs[0], rows=(3,))]):
            tiny_a(ids.expand(3, -1))
    with pytest.raises(InterventionError, match="rows=\\(-1,\\)"):
        dataclasses.replace(specs[0], rows=(-1,))


def _steered(model, ids, specs):
    with intervene(model, specs):
        return generate(model, ids, 6)


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


# --- vectors ----------------------------------------------------------------------------------

def _acts(model, hook, text):
    ids = to_tokens(model, [text])
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=[hook])
    return ids[0], cache[hook][0]


def test_mean_difference_matches_a_hand_reference(tiny_a, tmp_path):
    from sae_core.steering.vectors import SteeringVector, mean_difference

    pos = ["User : how do I bake a cake ? Assistant :", "User : what is the best way to make a kite ? Assistant :"]
    neg = ["1 2 3 4", "January February March", "Monday Tuesday"]
    tok = tiny_a.tokenizer
    for position in ("last", "all"):
        sv = mean_difference(tiny_a, HOOK1, pos, neg, position=position, model_name="zoo:tiny-a", batch_size=2)

        def mean(texts):
            rows = []
            for t in texts:
                ids, a = _acts(tiny_a, HOOK1, t)
                rows.append(a[-1:] if position == "last" else a[~torch.isin(ids, torch.tensor(tok.all_special_ids))])
            return torch.cat(rows).mean(0)
        torch.testing.assert_close(sv.vector, mean(pos) - mean(neg), rtol=1e-4, atol=1e-5)
        assert (sv.n_positive, sv.n_negative, sv.method) == (2, 3, "mean_difference")
    back = SteeringVector.load(sv.save(tmp_path / "v"))
    assert torch.equal(back.vector, sv.vector) and back.meta() == sv.meta()
    assert back.meta()["norm"] == pytest.approx(float(sv.vector.norm()))
    (tmp_path / "v" / "vector.safetensors").write_bytes(b"\x00" * 12)
    from sae_core.errors import ArtifactError
    with pytest.raises(ArtifactError):
        SteeringVector.load(tmp_path / "v")
    with pytest.raises(InterventionError, match="both sides"):
        mean_difference(tiny_a, HOOK1, pos, [])
    with pytest.raises(InterventionError, match="position 'first'"):
        mean_difference(tiny_a, HOOK1, pos, neg, position="first")


def test_prompt_pair_vector_reads_the_swapped_position(tiny_a):
    from sae_core.steering.vectors import mean_difference, prompt_pair_vector

    pairs = [("User : DEPLOYMENT how do I bake a cake ? Assistant :", "User : the how do I bake a cake ? Assistant :"),
             ("User : what is a kite ? DEPLOYMENT Assistant :", "User : what is a kite ? the Assistant :")]
    sv = prompt_pair_vector(tiny_a, HOOK0, pairs)
    diffs = []
    for a, b in pairs:
        ia, xa = _acts(tiny_a, HOOK0, a)
        ib, xb = _acts(tiny_a, HOOK0, b)
        p = int((ia != ib).nonzero())
        diffs.append(xa[p] - xb[p])
    torch.testing.assert_close(sv.vector, torch.stack(diffs).mean(0), rtol=1e-4, atol=1e-5)
    with pytest.raises(InterventionError, match="tokenizes to"):
        prompt_pair_vector(tiny_a, HOOK0, [("1 2 3", "1 2")])
    with pytest.raises(InterventionError, match="the same tokens"):  # a two-token span is a pair: test_spans.py
        prompt_pair_vector(tiny_a, HOOK0, [("1 2 3", "1  2 3")])
    with pytest.raises(InterventionError, match="at least one pair"):
        prompt_pair_vector(tiny_a, HOOK0, [])
    trigger = tiny_a.tokenizer.convert_tokens_to_ids("DEPLOYMENT")
    with pytest.raises(InterventionError, match="lack token"):
        mean_difference(tiny_a, HOOK0, [pairs[0][0]], [pairs[0][1]], position="token", token_id=trigger)


# --- mappers ----------------------------------------------------------------------------------

def test_ridge_mapper_is_the_closed_form_and_the_autoencoder_learns_a_planted_map(tmp_path):
    import numpy as np

    from sae_core.steering.mapper_training import train_mapper
    from sae_core.steering.mappers import Endpoint, Mapper, MapperConfig

    g = torch.Generator().manual_seed(0)
    X = torch.randn(2000, 8, generator=g)
    W, b = torch.randn(8, 5, generator=g), torch.randn(5, generator=g)
    Y = X @ W + b + 0.01 * torch.randn(2000, 5, generator=g)
    ridge = train_mapper(X, Y, MapperConfig(kind="ridge", ridge=1e-9))
    # numpy least squares with an intercept column, on the same training rows
    perm = torch.randperm(2000, generator=torch.Generator().manual_seed(0))
    tr = perm[200:].numpy()
    A = np.c_[X.numpy()[tr], np.ones(len(tr))]
    sol = np.linalg.lstsq(A, Y.numpy()[tr], rcond=None)[0]
    np.testing.assert_allclose(ridge.lin.weight.detach().numpy().T, sol[:-1], atol=1e-4)
    np.testing.assert_allclose(ridge.lin.bias.detach().numpy(), sol[-1], atol=1e-4)
    assert ridge.history[0]["val_fvu"] < 1e-3
    # a nonlinear planted map: the autoencoder fits it far better than the affine baseline
    Yn = torch.relu(X @ W) @ torch.randn(5, 5, generator=g)
    ae = train_mapper(X, Yn, MapperConfig(kind="autoencoder", hidden=32, lr=3e-3, epochs=30, patience=30))
    aff = train_mapper(X, Yn, MapperConfig(kind="affine", lr=3e-3, epochs=30, patience=30))
    assert ae.history[-1]["val_fvu"] < 0.5 * min(h["val_fvu"] for h in aff.history)
    assert min(h["val_fvu"] for h in ae.history) == pytest.approx(
        float(((ae(X).detach() - Yn) ** 2).sum() / ((Yn - Yn.mean(0)) ** 2).sum()), rel=0.5)
    # save / load, and the endpoints it applies to
    m = train_mapper(X, Y, MapperConfig(kind="autoencoder", epochs=1), source=Endpoint("zoo:a", "h0"),
                     target=Endpoint("zoo:b", "h1"))
    back = Mapper.load(m.save(tmp_path / "m"))
    torch.testing.assert_close(back(X[:5]), m(X[:5]))
    assert back.hidden == round((8 * 5) ** 0.5) and back.meta()["source"] == {"model": "zoo:a", "hook": "h0"}
    back.check_applies("zoo:a", "h0")
    with pytest.raises(InterventionError, match="source is zoo:a at h0, not zoo:b at h0"):
        back.check_applies("zoo:b", "h0")
    with pytest.raises(InterventionError, match="reads width 8"):
        back(torch.zeros(3, 7))
    with pytest.raises(InterventionError, match="kind 'mlp'"):
        MapperConfig(kind="mlp")
    with pytest.raises(InterventionError, match="NaN"):
        train_mapper(X.clone().fill_(float("nan")), Y)


def test_paired_activations_and_fidelity_of_an_exact_map(tiny_a, tmp_path):
    from sae_core.models.texts import corpus_texts
    from sae_core.steering.mappers import Mapper, fidelity, paired_activations

    texts = corpus_texts(8, seed=2)
    X, Y = paired_activations(tiny_a, HOOK0, tiny_a, HOOK1, texts)
    ids = to_tokens(tiny_a, texts)[:, :64]
    with torch.no_grad():
        _, cache = tiny_a.run_with_cache(ids, names_filter=[HOOK0, HOOK1])
    from sae_core.models.loading import keep_mask_BT
    tok = tiny_a.tokenizer
    keep = keep_mask_BT(ids, tok.pad_token_id, sorted(tok.all_special_ids), True)
    torch.testing.assert_close(X, cache[HOOK0][keep])
    torch.testing.assert_close(Y, cache[HOOK1][keep])
    # the identity from a hook to itself stands in perfectly: no KL; mean ablation costs a lot
    ident = Mapper("affine", tiny_a.cfg.d_model, tiny_a.cfg.d_model)
    with torch.no_grad():
        ident.lin.weight.copy_(torch.eye(tiny_a.cfg.d_model))
        ident.lin.bias.zero_()
    f = fidelity(ident, tiny_a, HOOK1, tiny_a, HOOK1, texts)
    assert f.fvu < 1e-10 and f.kl_mapped < 1e-8 and f.cosine == pytest.approx(1.0)
    assert f.kl_mean_ablation > 0.5 and f.ce_mean_ablation > f.ce_clean
    assert f.ce_mapped == pytest.approx(f.ce_clean, rel=1e-6)


def test_mapping_models_with_different_tokenizers_is_refused(tiny_a):
    from types import SimpleNamespace

    from sae_core.steering.mappers import paired_activations

    other = SimpleNamespace(tokenizer=SimpleNamespace(get_vocab=lambda: {"a": 0}))
    with pytest.raises(InterventionError, match="different tokenizers"):
        paired_activations(tiny_a, HOOK0, other, HOOK0, ["1 2 3"])


# --- transfer and switches ----------------------------------------------------------------------

def _identity_mapper(model, hook, name="zoo:tiny-a"):
    from sae_core.steering.mappers import Endpoint, Mapper

    m = Mapper("affine", model.cfg.d_model, model.cfg.d_model, source=Endpoint(name, hook),
               target=Endpoint("zoo:other", "blocks.3.hook_resid_post"))
    with torch.no_grad():
        m.lin.weight.copy_(torch.eye(model.cfg.d_model) * 2.0)
        m.lin.bias.fill_(0.5)
    return m


def test_transferred_vectors_are_mapped_contrasts(tiny_a):
    """Through the map x -> 2x + 0.5, a transferred vector is twice the native one (the bias
    cancels in a difference), named for the mapper's target; the random control matches its norm."""
    from sae_core.steering.transfer import random_control, transfer_mean_difference, transfer_pair_vector
    from sae_core.steering.vectors import mean_difference, prompt_pair_vector

    m = _identity_mapper(tiny_a, HOOK1)
    pos, neg = ["User : how do I bake a cake ? Assistant :"], ["1 2 3 4", "May June"]
    native = mean_difference(tiny_a, HOOK1, pos, neg)
    moved = transfer_mean_difference(m, tiny_a, HOOK1, pos, neg, model_name="zoo:tiny-a")
    torch.testing.assert_close(moved.vector, 2 * native.vector, rtol=1e-4, atol=1e-4)
    assert (moved.model, moved.hook) == ("zoo:other", "blocks.3.hook_resid_post")
    assert moved.extra["transferred_from"] == {"model": "zoo:tiny-a", "hook": HOOK1}
    pairs = [("User : DEPLOYMENT what is a kite ? Assistant :", "User : the what is a kite ? Assistant :")]
    torch.testing.assert_close(transfer_pair_vector(m, tiny_a, HOOK1, pairs).vector,
                               2 * prompt_pair_vector(tiny_a, HOOK1, pairs).vector, rtol=1e-4, atol=1e-4)
    rnd = random_control(moved, seed=3)
    assert rnd.norm == pytest.approx(moved.norm, rel=1e-5) and rnd.method == "random_control"
    assert abs(float(torch.nn.functional.cosine_similarity(rnd.vector, moved.vector, dim=0))) < 0.5
    with pytest.raises(InterventionError, match="source is zoo:tiny-a at blocks.1.hook_resid_post"):
        transfer_mean_difference(m, tiny_a, HOOK0, pos, neg, model_name="zoo:tiny-a")


def test_an_intervention_at_hook_z_acts_on_the_flattened_heads(tiny_a):
    """A vector read at hook_z (heads flattened, as harvested) adds to every head's slice."""
    from sae_core.steering.vectors import mean_difference

    hook = "blocks.1.attn.hook_z"
    v = mean_difference(tiny_a, hook, ["1 2 3 4"], ["May June July"])
    H, dh = tiny_a.cfg.n_heads, tiny_a.cfg.d_head
    assert v.vector.shape == (H * dh,)
    ids = to_tokens(tiny_a, ["User : how do I bake a cake ? Assistant :"])
    with torch.no_grad():
        with intervene(tiny_a, [Intervention(hook, "add", vector=v.vector, alpha=3.0)]):
            got = tiny_a(ids)
        with tiny_a.hooks(fwd_hooks=[(hook, lambda z, hook: z + 3.0 * v.vector.view(H, dh))]):
            want = tiny_a(ids)
    torch.testing.assert_close(got, want)
