"""Feature absorption: a planted absorbing SAE and its unabsorbed twin, config checks, and one small
run on zoo:tiny-a."""
import itertools
import json

import pytest
import torch

from sae_core.errors import SAECoreError
from sae_core.evaluation.config import AbsorptionConfig
from sae_core.evaluation.absorption import (absorption, absorption_data,
                                            build_data)
from sae_core.sae.registry import create_sae
from tests.helpers import sae_cfg

D_IN = 64
ABSORBED = ("snake", "sun", "sand")
S_WORDS = list(ABSORBED) + [f"s{a}{b}" for a, b in itertools.product("aeiou", "bcdfgh")][:27]
WORDS = {"s": S_WORDS, "t": [f"t{a}p" for a in "aeiouyrl"], "b": [f"b{a}x" for a in "aeiouy"],
         "q": ["quiz", "quack"]}  # q: fewer than min_words, never scored
PER_SPLIT = 4  # contexts per word and split


@pytest.fixture(scope="module")
def planted():
    """Synthetic occurrences: x = letter direction + word direction + noise (orthonormal
    directions), each word in 4 training and 4 test contexts; the probe trained on them."""
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(D_IN, D_IN, generator=g))[0].T  # rows orthonormal
    letters = list(WORDS)
    words = [w for ws in WORDS.values() for w in ws]
    dirs = {name: basis[i] for i, name in enumerate(letters + words)}
    word_N = [w for w in words for _ in range(2 * PER_SPLIT)]
    train_N = torch.tensor([i % (2 * PER_SPLIT) < PER_SPLIT for i in range(len(word_N))])
    noise_ND = 0.02 * torch.randn(len(word_N), D_IN, generator=g)
    acts_ND = torch.stack([dirs[w[0]] + dirs[w] for w in word_N]) + noise_ND
    contexts = [f"context {i}" for i in range(len(word_N))]
    data = build_data(acts_ND, word_N, train_N, torch.arange(len(word_N)), contexts)
    return data, dirs


def _planted_sae(dirs, absorbing: bool):
    """A ReLU SAE: one latent per letter and per word (encoder = decoder = its direction, bias
    -0.2); ``absorbing``: the "s" latent is silent on the absorbed words, whose own latents carry
    the s direction instead (the twin: the "s" latent fires on every s-word)."""
    sae = create_sae(sae_cfg("relu", d_in=D_IN, d_sae=D_IN)).eval()
    names = list(dirs)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_dec.zero_()
        sae.b_enc.fill_(-1.0)  # the spare latents never fire
        for j, name in enumerate(names):
            enc, dec = dirs[name].clone(), dirs[name].clone()
            if absorbing and name == "s":
                enc -= 2 * sum(dirs[w] for w in ABSORBED)
            if absorbing and name in ABSORBED:
                dec = torch.nn.functional.normalize(dirs[name] + dirs["s"], dim=0)
                enc = 2 ** 0.5 * dirs[name]
            sae.W_enc[:, j], sae.W_dec[j], sae.b_enc[j] = enc, dec, -0.2
    return sae


def test_planted_absorption_scores_the_planted_share(planted):
    data, dirs = planted
    res = absorption(_planted_sae(dirs, absorbing=True), data)
    s = next(r for r in res.per_letter if r["letter"] == "s")
    share = len(ABSORBED) / len(S_WORDS)  # each s-word has the same number of test contexts
    assert s["scored"] and s["probe_f1"] > 0.95
    assert s["main_latents"] == [list(dirs).index("s")]
    assert s["absorption_rate"] == pytest.approx(share, abs=0.02)
    assert s["full_absorption_rate"] == pytest.approx(share, abs=0.02)
    assert set(s["absorbed_words"]) == set(ABSORBED)
    assert set(s["absorbing_latents"]) == {list(dirs).index(w) for w in ABSORBED}
    for r in res.per_letter:  # nothing is absorbed elsewhere
        if r["letter"] != "s" and r["scored"]:
            assert r["absorption_rate"] < 0.02


def test_unabsorbed_twin_scores_zero(planted):
    data, dirs = planted
    res = absorption(_planted_sae(dirs, absorbing=False), data)
    s = next(r for r in res.per_letter if r["letter"] == "s")
    assert s["scored"] and s["main_latents"] == [list(dirs).index("s")]
    assert s["absorption_rate"] < 0.01 and s["full_absorption_rate"] == 0
    assert res.mean_absorption < 0.01
    q = next(r for r in res.per_letter if r["letter"] == "q")
    assert not q["scored"] and "min_words" in q["reason"]


def test_sae_checks(planted):
    data, dirs = planted
    with pytest.raises(SAECoreError, match="eval"):
        absorption(_planted_sae(dirs, absorbing=False).train(), data)
    with pytest.raises(SAECoreError, match="d_in = 16"):
        absorption(create_sae(sae_cfg("relu")).eval(), data)


@pytest.mark.parametrize("field,value", [("min_words", 0), ("n_docs", 2.5), ("max_per_word", -1),
                                         ("probe_l2", 0.0), ("k_sparse_l1", -1.0), ("min_probe_f1", 1.5),
                                         ("fraction_cos", 2.0), ("proportion", -0.1), ("max_k", 0),
                                         ("max_absorbers", True), ("seed", -3)])
def test_bad_config_names_the_value(field, value):
    with pytest.raises(SAECoreError, match=f"{field} = {value!r}"):
        AbsorptionConfig(**{field: value})


def test_tiny_a_run(tiny_a):
    cfg = AbsorptionConfig(n_docs=150, max_per_word=6)
    data = absorption_data(tiny_a, "blocks.1.hook_resid_post", cfg)
    train, test = data.train_N, ~data.train_N
    train_texts = {data.contexts[c] for c in data.context_N[train].tolist()}
    test_texts = {data.contexts[c] for c in data.context_N[test].tolist()}
    assert train_texts and test_texts and not train_texts & test_texts
    assert set(data.word_N[i] for i in range(len(data.word_N)) if test[i]) <= set(data.word_N)
    assert all(w.isalpha() for w in data.word_N)
    assert data.acts_ND.shape == (len(data.word_N), 128) and torch.isfinite(data.acts_ND).all()

    torch.manual_seed(0)
    sae = create_sae(sae_cfg("topk", d_in=128, d_sae=256, k=8)).eval()
    res = absorption(sae, data, cfg)
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert res.n_scored >= 1 and 0 <= res.mean_absorption <= 1 and 0 <= res.mean_full_absorption <= 1
    for r in res.per_letter:
        if r["n_words"] < cfg.min_words:
            assert not r["scored"]
        if r["scored"]:
            assert r["n_words"] >= cfg.min_words and r["probe_f1"] > cfg.min_probe_f1
            assert 0 <= r["absorption_rate"] <= 1 and 1 <= len(r["main_latents"]) <= cfg.max_k
    assert any(r["n_words"] < cfg.min_words for r in res.per_letter)  # x, z: the gate was exercised
    assert "word-level" in res.method and d["n_scored"] == res.n_scored


def _reference_row(z_S, act, cos_S, main, cfg):
    """SAEBench's per-word rules (feature_absorption_calculator.py), one row at a time."""
    proj = [float(z) * float(c) for z, c in zip(z_S, cos_S)]
    main_proj = sum(proj[j] for j in main)
    cands = sorted((p for j, p in enumerate(proj) if j not in main and cos_S[j] >= cfg.fraction_cos and p > 0),
                   reverse=True)[:cfg.max_absorbers]
    absorbers = sum(cands)
    if act <= 0 or main_proj >= act or absorbers / act < cfg.proportion:
        frac = 0.0
    elif main_proj <= 0:
        frac = 1.0
    else:
        a = min(absorbers, act - main_proj)
        frac = min(max(a / (a + main_proj), 0.0), 1.0)
    top = max(range(len(proj)), key=lambda j: proj[j])
    full = (all(abs(float(z_S[j])) < 1e-8 for j in main) and cos_S[top] >= cfg.full_cos and act > 0
            and proj[top] / act >= cfg.proportion)
    return frac, full


def test_batched_scores_match_the_per_row_rules():
    from sae_core.evaluation.absorption import _absorption_scores

    cfg = AbsorptionConfig()
    g = torch.Generator().manual_seed(1)
    z_MS = torch.relu(torch.randn(400, 12, generator=g)) * (torch.rand(400, 12, generator=g) < 0.4)
    z_MS[:100, :2] = 0  # main latents silent: full absorption possible
    cos_S = torch.rand(12, generator=g) * 0.6 - 0.1
    act_M = torch.randn(400, generator=g).abs() * 1.5
    act_M[:20] *= -1
    frac_M, full_M, _ = _absorption_scores(z_MS, act_M, cos_S, [0, 1], cfg)
    ref = [_reference_row(z_MS[m], float(act_M[m]), cos_S, [0, 1], cfg) for m in range(400)]
    assert frac_M.tolist() == pytest.approx([r[0] for r in ref], abs=1e-5)
    assert full_M.tolist() == [r[1] for r in ref]
    assert 0 < (frac_M > 0).float().mean() < 1 and ((frac_M > 0) & (frac_M < 1)).any() and full_M.any()
