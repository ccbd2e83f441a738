"""SAE architectures: TopK, BatchTopK (a JumpReLU at inference), the Sampled-SAE's pool and
scores (against numpy), coordinates, configuration errors and labels."""
import logging

import numpy as np
import pytest
import torch

from sae_core.sae import SAEConfig, SAEConfigError, create_sae
from sae_core.sae.sampled import latent_scores, select_pool
from tests.helpers import sae_cfg


def test_topk_keeps_k_per_token_and_batchtopk_k_times_batch():
    torch.manual_seed(0)
    x = torch.randn(50, 16)
    z = create_sae(sae_cfg("topk"))(x).z
    assert ((z != 0).sum(1) <= 4).all() and (z >= 0).all()
    sae = create_sae(sae_cfg("batchtopk")).train()
    z = sae(x).z
    assert (z != 0).sum() <= 4 * 50
    relu = torch.relu(sae.pre_acts(x))
    kept_min = z[z > 0].min()
    assert (relu[z == 0] <= kept_min + 1e-6).all()  # nothing larger was dropped


def test_batchtopk_runs_as_jumprelu_at_inference():
    torch.manual_seed(0)
    sae = create_sae(sae_cfg("batchtopk")).train()
    for _ in range(5):
        sae(torch.randn(64, 16))
    theta = sae.threshold.item()
    assert theta > 0
    sae.eval()
    x = torch.randn(3, 16)
    pre = torch.relu(sae.pre_acts(x))
    assert torch.equal(sae.encode(x), pre * (pre > theta))
    assert sae.threshold.item() == theta  # eval never moves the threshold


@pytest.mark.parametrize("scoring", ["l2", "l2sq", "entropy"])
@pytest.mark.parametrize("rule", ["top", "sample"])
def test_sampled_l1_uses_at_most_k_distinct_latents_per_batch(scoring, rule):
    """Property over random inputs and seeds: with l=1 a batch never uses more than K latents."""
    for seed in range(25):
        torch.manual_seed(seed)
        k = int(torch.randint(1, 9, ()).item())
        sae = create_sae(sae_cfg("sampled", k=k, l=1.0, scoring=scoring, pool_rule=rule)).train()
        x = torch.randn(int(torch.randint(1, 200, ()).item()), 16) * torch.rand(()) * 5
        z = sae(x).z
        assert ((z != 0).any(0)).sum() <= k


def test_sampled_inference_uses_the_learned_pool_and_threshold():
    torch.manual_seed(2)
    sae = create_sae(sae_cfg("sampled", k=3, l=1.0)).train()
    x = torch.randn(128, 16)
    for _ in range(30):
        sae(x)
    sae.eval()
    z = sae.encode(torch.randn(500, 16) * 3)
    used = (z != 0).any(0)
    assert used.sum() <= 3 and used[~sae.inference_pool()].sum() == 0
    assert ((z == 0) | (z > sae.threshold)).all()
    single = sae.encode(torch.randn(16))  # one token encodes without a batch
    assert single.shape == (64,) and (single != 0).sum() <= 3


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu", "sampled"])
def test_encode_coords_are_the_nonzero_entries_of_encode(arch):
    """The index's sparse encoder: the same entries, values and row-major order as ``encode``."""
    torch.manual_seed(0)
    sae = create_sae(sae_cfg(arch, d_in=16, d_sae=64, k=5, l=3.0))
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(64) * 0.3)
        if arch == "jumprelu":
            sae.threshold.copy_(torch.rand(64) * 0.5)
        if arch in ("batchtopk", "sampled"):
            sae.threshold.fill_(0.4)
        if arch == "sampled":
            sae.pool_freq.copy_(torch.rand(64))
    sae.eval()
    x = torch.randn(300, 16)
    z = sae.encode(x)
    rows, cols, vals = sae.encode_coords(x, out=torch.empty(300, 64))
    ref_rows, ref_cols = z.nonzero(as_tuple=True)
    assert rows.numel() > 0 and (z != 0).sum() == rows.numel()
    assert torch.equal(rows, ref_rows) and torch.equal(cols, ref_cols)
    torch.testing.assert_close(vals, z[ref_rows, ref_cols])


def test_sampled_pool_calibration_replaces_a_stale_training_ema():
    """calibrate_pool: the inference pool becomes the latents most often in the pools of the given
    batches at the current weights, whatever the training EMA remembered."""
    torch.manual_seed(0)
    sae = create_sae(sae_cfg("sampled", d_in=16, d_sae=64, k=2, l=4.0)).eval()  # pool of 8
    batches = [torch.randn(128, 16) for _ in range(6)]
    counts = torch.zeros(64)
    with torch.no_grad():
        for x in batches:
            counts[sae._pool(sae.pre_acts(x))] += 1
        never = (counts == 0).nonzero().squeeze(1)
        sae.pool_freq.zero_()[never[:8]] = 1.0  # a stale EMA: only latents no batch pools now
    assert not (sae.inference_pool() & (counts > 0)).any()
    sae.calibrate_pool(batches)
    pool = sae.inference_pool()
    assert counts[pool].min() >= counts[~pool].max()  # the 8 most frequent (ties broken either way)
    assert (counts[pool] > 0).all()


def test_sampled_with_a_pool_of_everything_is_batchtopk():
    torch.manual_seed(1)
    sampled = create_sae(sae_cfg("sampled", l=1000.0)).train()
    plain = create_sae(sae_cfg("batchtopk")).train()
    plain.load_state_dict(sampled.state_dict(), strict=False)  # all but the pool statistics
    x = torch.randn(40, 16)
    assert torch.equal(sampled(x).z, plain(x).z)


def test_latent_scores_match_numpy():
    rng = np.random.default_rng(0)
    a = np.maximum(rng.normal(size=(30, 8)), 0)
    a[:, 3] = 0  # a column with no mass
    l2 = latent_scores(torch.tensor(a), "l2").numpy()
    np.testing.assert_allclose(l2, np.sqrt((a ** 2).sum(0)), rtol=1e-12)
    np.testing.assert_allclose(latent_scores(torch.tensor(a), "l2sq").numpy(), (a ** 2).sum(0), rtol=1e-12)
    ent = latent_scores(torch.tensor(a), "entropy").numpy()
    for j in range(8):
        m = a[:, j].sum()
        if m == 0:
            assert ent[j] == -np.inf
        else:
            p = a[:, j][a[:, j] > 0] / m
            assert ent[j] == pytest.approx(-(p * np.log(p)).sum(), rel=1e-9)


def test_latent_scores_with_a_floor_match_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 6))  # raw pre-activations, negatives included
    for floor in (0.3, 1.2):
        kept = np.where(a > floor, a, 0.0)
        np.testing.assert_allclose(latent_scores(torch.tensor(a), "l2", floor).numpy(),
                                   np.sqrt((kept ** 2).sum(0)), rtol=1e-12)
        ent = latent_scores(torch.tensor(a), "entropy", floor).numpy()
        for j in range(6):
            if not (kept[:, j] > 0).any():  # nothing above the floor: no mass
                assert ent[j] == -np.inf
                continue
            p = kept[:, j][kept[:, j] > 0] / kept[:, j].sum()
            assert ent[j] == pytest.approx(-(p * np.log(p)).sum(), rel=1e-9)


def test_entropy_pool_keeps_a_learned_latent_over_sub_threshold_noise():
    """The cause of issue #11's slow entropy runs: a latent that has learned a feature fires
    strongly on some tokens over a weak tail, an untrained one spreads weak values over half the
    batch. On all of relu(pre) the untrained one has the higher entropy, so every batch's pool
    traded trained latents for untrained ones (after 200 steps on the benchmark's data, 7 of the
    128 trained latents were still in entropy's top 128). Scored on what BatchTopK can keep
    (above its threshold), the learned latent wins."""
    g = torch.Generator().manual_seed(0)
    n, theta = 4096, 1.0
    learned = torch.randn(n, generator=g).clamp_min(0) * 0.3
    learned[torch.randperm(n, generator=g)[: n // 10]] = 3.0 + torch.rand(n // 10, generator=g)
    untrained = torch.randn(n, generator=g) * 0.5
    acts = torch.stack([learned, untrained], 1)
    before = latent_scores(acts, "entropy")           # the rule before the fix: relu(pre)
    after = latent_scores(acts, "entropy", theta)      # the pool's rule: above the threshold
    assert before[1] > before[0] and after[0] > after[1]
    # the pool passes its threshold once it is set, and nothing before
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="sampled", d_in=2, d_sae=2, k=1, l=1.0, scoring="entropy")).train()
    assert sae._pool(acts).tolist() == [1]
    sae.threshold.fill_(theta)
    sae.threshold_initialized.fill_(True)
    assert sae._pool(acts).tolist() == [0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_chunked_scores_of_pre_activations_equal_the_definitions(monkeypatch, dtype):
    """The fast scores (row chunks, no relu copy, entropy as log m - sum(a log a)/m) read raw
    pre-activations and equal the straightforward definitions on relu(pre)."""
    import sae_core.sae.sampled as sampled

    monkeypatch.setattr(sampled, "_CHUNK_VALUES", 7 * 24)  # 7-row chunks, a ragged last one
    g = torch.Generator().manual_seed(5)
    pre = torch.randn(101, 24, generator=g, dtype=torch.float64) * torch.rand(24, generator=g,
                                                                               dtype=torch.float64) * 4
    pre[:, 3] = -torch.rand(101, generator=g, dtype=torch.float64)  # no mass: entropy -inf
    pre[:, 5] = 0.0                                                   # exact zeros: no mass either
    pre[:, 7] = -1.0
    pre[40, 7] = 2.5                                                  # one positive entry: H = 0
    pre[:, 9] = 1e-3                                                  # uniform: H = log N
    pre = pre.to(dtype).double()  # half precision: the references see the same rounded values
    relu = torch.relu(pre)
    want_l2 = relu.norm(dim=0)
    mass = relu.sum(0)
    p = relu / mass.clamp_min(1e-300)
    want_h = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(0)
    # half precision is scored in float32 (a float16 floor of 6e-5 would bias the entropy)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for acts in (pre, relu):  # the fast path passes pre, the plain path relu(pre)
        got_l2 = sampled.latent_scores(acts.to(dtype), "l2").double()
        torch.testing.assert_close(got_l2, want_l2, **tol)
        got_h = sampled.latent_scores(acts.to(dtype), "entropy").double()
        assert torch.isneginf(got_h[[3, 5]]).all()
        has_mass = mass > 0
        torch.testing.assert_close(got_h[has_mass], want_h[has_mass], **tol)
        assert got_h[9] == pytest.approx(np.log(101), rel=1e-5)


def test_bad_configs_are_clear_errors(caplog):
    with pytest.raises(SAEConfigError, match="k=100 must be between 1 and d_sae=64"):
        sae_cfg("topk", k=100)
    with pytest.raises(SAEConfigError, match="l=0"):
        sae_cfg("sampled", l=0)
    with pytest.raises(SAEConfigError, match="l=-1"):
        sae_cfg("sampled", l=-1)
    for bad in (0.5, float("nan"), float("inf")):  # 0.5 used to become l=1 silently (issue #11)
        with pytest.raises(SAEConfigError, match=f"l={bad} is not allowed: l must be a finite number >= 1"):
            sae_cfg("sampled", l=bad)
    assert sae_cfg("sampled", l=1).pool_size == 4  # K latents
    with pytest.raises(SAEConfigError, match="unknown SAE architecture 'gated'"):
        sae_cfg("gated")
    with caplog.at_level(logging.WARNING):
        cfg = sae_cfg("sampled", k=8, l=20)
    assert cfg.pool_size == 64 and "clamped" in caplog.text


def test_labels_name_only_the_settings_the_architecture_reads():
    from sae_core.sae.config import sae_label

    # a TopK SAE was listed as "topk, l=4.0, l2" (issue #11)
    assert sae_cfg("topk").label == "topk" and sae_label(sae_cfg("topk").to_json(), detail=True) == "topk k=4"
    assert sae_label(sae_cfg("batchtopk").to_json(), detail=True) == "batchtopk k=4"
    sampled = sae_cfg("sampled", l=4.0, scoring="entropy", pool_rule="sample").to_json()
    assert sae_cfg("sampled", l=4.0, scoring="entropy").label == "sampled l=4 entropy"
    assert sae_label(sampled, detail=True) == "sampled k=4 l=4 entropy pool=sample"
    assert sae_label(sae_cfg("relu", l1_coeff=2.5).to_json(), detail=True) == "relu l1=2.5"
    # a workspace SAE's meta, and one written before l1_coeff was recorded
    meta = {"arch": "relu", "d_sae": 64, "k": 32, "l": 4.0, "scoring": "l2", "pool_rule": "top"}
    assert sae_label(meta, detail=True) == "relu"
    assert sae_label({"arch": "topk", "k": 32, "l": None, "scoring": None}) == "topk"  # a sweep row


def test_squared_l2_keeps_l2s_pool_under_top_and_draws_otherwise_under_sample():
    """Squared L2 ranks latents as L2 does, so the top-K·l pool is the same; the sampling rule
    weights by the score itself, so latent j is drawn with probability s_j^2 / sum s^2, not
    s_j / sum s (issue #30)."""
    torch.manual_seed(0)
    acts = torch.relu(torch.randn(64, 32)) * torch.rand(32) * 3
    for size in (1, 5, 16):
        assert torch.equal(select_pool(latent_scores(acts, "l2"), size, "top").sort().values,
                           select_pool(latent_scores(acts, "l2sq"), size, "top").sort().values)
    # one latent per draw from three columns of L2 norms 1, 2, 3
    acts = torch.tensor([[1.0, 2.0, 3.0]])
    draws = 4000
    for scoring, weights in (("l2", [1, 2, 3]), ("l2sq", [1, 4, 9])):
        gen = torch.Generator().manual_seed(1)
        counts = torch.bincount(torch.cat([select_pool(latent_scores(acts, scoring), 1, "sample", gen)
                                           for _ in range(draws)]), minlength=3).double()
        expected = torch.tensor(weights, dtype=torch.double) / sum(weights)
        assert torch.allclose(counts / draws, expected, atol=0.03), (scoring, counts / draws)
