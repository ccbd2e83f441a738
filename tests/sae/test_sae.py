"""SAE architectures, metrics (against numpy), the trainer (planted features, exact resume),
and the SAELens on-disk layout."""
import json
import logging
import shutil

import numpy as np
import pytest
import torch

from sae_core.errors import ArtifactError, SAECoreError
from sae_core.sae import SAEConfig, SAEConfigError, create_sae
from sae_core.sae.io import load_density, load_sae, save_sae
from sae_core.sae.metrics import MetricAccumulator, shared_structure
from sae_core.sae.sampled import latent_scores
from sae_core.training.loop import TrainerConfig, train_sae
from tests.helpers import batch_source, planted


def _cfg(arch, **kw):
    base = dict(arch=arch, d_in=16, d_sae=64, k=4)
    base.update(kw)
    return SAEConfig(**base)


# --- architectures ---------------------------------------------------------------------------

def test_topk_keeps_k_per_token_and_batchtopk_k_times_batch():
    torch.manual_seed(0)
    x = torch.randn(50, 16)
    z = create_sae(_cfg("topk"))(x).z
    assert ((z != 0).sum(1) <= 4).all() and (z >= 0).all()
    sae = create_sae(_cfg("batchtopk")).train()
    z = sae(x).z
    assert (z != 0).sum() <= 4 * 50
    relu = torch.relu(sae.pre_acts(x))
    kept_min = z[z > 0].min()
    assert (relu[z == 0] <= kept_min + 1e-6).all()  # nothing larger was dropped


def test_batchtopk_runs_as_jumprelu_at_inference():
    torch.manual_seed(0)
    sae = create_sae(_cfg("batchtopk")).train()
    for _ in range(5):
        sae(torch.randn(64, 16))
    theta = sae.threshold.item()
    assert theta > 0
    sae.eval()
    x = torch.randn(3, 16)
    pre = torch.relu(sae.pre_acts(x))
    assert torch.equal(sae.encode(x), pre * (pre > theta))
    assert sae.threshold.item() == theta  # eval never moves the threshold


@pytest.mark.parametrize("scoring", ["l2", "entropy"])
@pytest.mark.parametrize("rule", ["top", "sample"])
def test_sampled_l1_uses_at_most_k_distinct_latents_per_batch(scoring, rule):
    """Property over random inputs and seeds: with l=1 a batch never uses more than K latents."""
    for seed in range(25):
        torch.manual_seed(seed)
        k = int(torch.randint(1, 9, ()).item())
        sae = create_sae(_cfg("sampled", k=k, l=1.0, scoring=scoring, pool_rule=rule)).train()
        x = torch.randn(int(torch.randint(1, 200, ()).item()), 16) * torch.rand(()) * 5
        z = sae(x).z
        assert ((z != 0).any(0)).sum() <= k


def test_sampled_inference_uses_the_learned_pool_and_threshold():
    torch.manual_seed(2)
    sae = create_sae(_cfg("sampled", k=3, l=1.0)).train()
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
    sae = create_sae(_cfg(arch, d_in=16, d_sae=64, k=5, l=3.0))
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
    sae = create_sae(_cfg("sampled", d_in=16, d_sae=64, k=2, l=4.0)).eval()  # pool of 8
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
    sampled = create_sae(_cfg("sampled", l=1000.0)).train()
    plain = create_sae(_cfg("batchtopk")).train()
    plain.load_state_dict(sampled.state_dict(), strict=False)  # all but the pool statistics
    x = torch.randn(40, 16)
    assert torch.equal(sampled(x).z, plain(x).z)


def test_latent_scores_match_numpy():
    rng = np.random.default_rng(0)
    a = np.maximum(rng.normal(size=(30, 8)), 0)
    a[:, 3] = 0  # a column with no mass
    l2 = latent_scores(torch.tensor(a), "l2").numpy()
    np.testing.assert_allclose(l2, np.sqrt((a ** 2).sum(0)), rtol=1e-12)
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
        _cfg("topk", k=100)
    with pytest.raises(SAEConfigError, match="l=0"):
        _cfg("sampled", l=0)
    with pytest.raises(SAEConfigError, match="l=-1"):
        _cfg("sampled", l=-1)
    for bad in (0.5, float("nan"), float("inf")):  # 0.5 used to become l=1 silently (issue #11)
        with pytest.raises(SAEConfigError, match=f"l={bad} is not allowed: l must be a finite number >= 1"):
            _cfg("sampled", l=bad)
    assert _cfg("sampled", l=1).pool_size == 4  # K latents
    with pytest.raises(SAEConfigError, match="unknown SAE architecture 'gated'"):
        _cfg("gated")
    with caplog.at_level(logging.WARNING):
        cfg = _cfg("sampled", k=8, l=20)
    assert cfg.pool_size == 64 and "clamped" in caplog.text


def test_labels_name_only_the_settings_the_architecture_reads():
    from sae_core.sae.config import sae_label

    # a TopK SAE was listed as "topk, l=4.0, l2" (issue #11)
    assert _cfg("topk").label == "topk" and sae_label(_cfg("topk").to_json(), detail=True) == "topk k=4"
    assert sae_label(_cfg("batchtopk").to_json(), detail=True) == "batchtopk k=4"
    sampled = _cfg("sampled", l=4.0, scoring="entropy", pool_rule="sample").to_json()
    assert _cfg("sampled", l=4.0, scoring="entropy").label == "sampled l=4 entropy"
    assert sae_label(sampled, detail=True) == "sampled k=4 l=4 entropy pool=sample"
    assert sae_label(_cfg("relu", l1_coeff=2.5).to_json(), detail=True) == "relu l1=2.5"
    # a workspace SAE's meta, and one written before l1_coeff was recorded
    meta = {"arch": "relu", "d_sae": 64, "k": 32, "l": 4.0, "scoring": "l2", "pool_rule": "top"}
    assert sae_label(meta, detail=True) == "relu"
    assert sae_label({"arch": "topk", "k": 32, "l": None, "scoring": None}) == "topk"  # a sweep row


# --- metrics against numpy ------------------------------------------------------------------

def test_metrics_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 12)) + 2.0
    x_hat = x + rng.normal(scale=0.3, size=x.shape)
    z = np.maximum(rng.normal(size=(200, 40)) - 1.0, 0)
    z[:, :5] = 0                      # dead latents
    z[:, 5] = rng.random(200) + 0.1   # a dense latent
    acc = MetricAccumulator(40)
    for s in range(0, 200, 64):       # streaming in uneven batches
        acc.update(*(torch.tensor(a[s:s + 64]) for a in (x, x_hat, z)))
    m = acc.result()
    fvu = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert m.fvu == pytest.approx(fvu, rel=1e-9)
    assert m.explained_variance == pytest.approx(1 - fvu, rel=1e-9)
    assert m.l0 == pytest.approx((z != 0).sum(1).mean())
    assert m.mse == pytest.approx(((x - x_hat) ** 2).mean())
    cos = (x * x_hat).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(x_hat, axis=1)
    assert m.cosine == pytest.approx(cos.mean(), rel=1e-9)
    density = (z != 0).mean(0)
    assert m.dead_fraction == pytest.approx((density == 0).mean())
    assert m.dense_fraction == pytest.approx((density > 0.1).mean())


def test_shared_structure_matches_brute_force():
    rng = np.random.default_rng(4)
    z = np.maximum(rng.normal(size=(25, 30)) - 0.8, 0)
    distinct, overlap, top_mass = shared_structure(torch.tensor(z), k=5)
    active = z != 0
    assert distinct == active.any(0).sum()
    pairs = [(active[i] & active[j]).sum() for i in range(25) for j in range(25) if i != j]
    assert overlap == pytest.approx(np.mean(pairs) / active.sum(1).mean(), rel=1e-9)
    assert top_mass == pytest.approx(np.sort(z.sum(0))[-5:].sum() / z.sum(), rel=1e-9)


# --- trainer --------------------------------------------------------------------------------

@pytest.mark.slow
def test_batchtopk_recovers_planted_features():
    x, true = planted(40_000)
    cfg = SAEConfig(arch="batchtopk", d_in=32, d_sae=96, k=3)
    res = train_sae(batch_source(x, 512), cfg, TrainerConfig(total_tokens=512 * 1500, batch_size=512,
                                                       lr=3e-3, dead_tokens=20_000, seed=0))
    w = res.sae.W_dec.detach()
    best = (true @ (w / w.norm(dim=1, keepdim=True)).T).max(dim=1).values
    assert best.mean() >= 0.9, best
    acc = MetricAccumulator(96)
    out = res.sae(x[:4000])
    acc.update(x[:4000], out.x_hat, out.z)
    assert acc.result().fvu < 0.1


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "sampled"])
def test_encoder_scale_fit_keeps_the_active_set_and_is_least_squares(arch):
    """fit_encoder_scale: same latents fire, x_hat - b_dec shrinks by exactly c, the residual is
    orthogonal to it (the least-squares optimum), and no buffer is touched."""
    from sae_core.training.initialization import fit_encoder_scale

    x, _ = planted(512, seed=6)
    x = x * 3 + 1
    sae = create_sae(_cfg(arch, d_in=32, d_sae=128, k=4, l=2.0)).train()
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))
        before = sae(x)
    buffers = {n: b.clone() for n, b in sae.named_buffers()}
    c = fit_encoder_scale(sae, x)
    assert 0 < c < 1
    for n, b in sae.named_buffers():
        assert torch.equal(b, buffers[n]), n
    with torch.no_grad():
        after = sae(x)
    assert torch.equal(after.z != 0, before.z != 0)
    y_before, y_after = before.x_hat - sae.b_dec, after.x_hat - sae.b_dec
    torch.testing.assert_close(y_after, c * y_before, rtol=1e-4, atol=1e-4)
    cos = ((x - after.x_hat) * y_after).sum() / ((x - after.x_hat).norm() * y_after.norm())
    assert abs(cos.item()) < 1e-3


def test_decoder_init_from_data_points_rows_at_data_directions():
    """decoder_init="data": unit rows near the centred directions of data rows, W_enc = W_dec^T;
    random rows in a low-rank data subspace are far from every data direction."""
    from sae_core.training.initialization import init_decoder_from_data

    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(64, 8))[0]            # data lives in 8 of 64 dimensions
    x = torch.randn(2000, 8) @ basis.T + 5.0
    sae = create_sae(_cfg("batchtopk", d_in=64, d_sae=512, k=4))
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))
    dirs = x - x.mean(0)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)

    def best_cos():
        return (sae.W_dec.detach() @ dirs.T).max(dim=1).values
    assert best_cos().median() < 0.6                           # random unit rows
    init_decoder_from_data(sae, x)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(512))
    assert torch.equal(sae.W_enc, sae.W_dec.T)
    assert best_cos().min() > 0.75                             # each row next to a data row
    assert (sae.W_dec @ sae.W_dec.T - torch.eye(512)).max() < 0.995  # no two rows identical
    with pytest.raises(SAECoreError, match="decoder_init"):
        TrainerConfig(total_tokens=10, batch_size=1, decoder_init="zeros")


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "sampled"])
def test_short_runs_on_heavy_tailed_token_norms_do_not_overshoot(arch):
    """Issue #3 regression: with W_enc = W_dec^T at unit scale, BatchTopK gave its many latents to
    the few high-norm tokens and its reconstruction overshot (FVU ~2.9 here after 30 steps, like
    1.28 on zoo activations in the benchmark). The fitted encoder scale starts it near FVU < 1."""
    x, _ = planted(8192, d_in=32, n_true=96, per_token=4)
    x = x * torch.exp(torch.randn(8192, 1, generator=torch.Generator().manual_seed(1)) * 0.7) + 3
    cfg = SAEConfig(arch=arch, d_in=32, d_sae=256, k=4, l=16.0)  # pool 64 of the 96 features
    tcfg = TrainerConfig(total_tokens=30 * 512, batch_size=512, lr=2e-3, warmup_steps=0, seed=0)
    sae = train_sae(batch_source(x, 512), cfg, tcfg).sae
    acc = MetricAccumulator(256)
    with torch.no_grad():
        out = sae(x)
    acc.update(x, out.x_hat, out.z)
    assert acc.result().fvu < 0.5


@pytest.mark.parametrize("arch", ["batchtopk", "sampled"])
def test_short_runs_get_an_inference_threshold_that_keeps_l0_near_k(arch):
    """The training EMA lags the weights; calibration at the final weights fixes inference L0."""
    x, _ = planted(30_000, seed=3)
    cfg = SAEConfig(arch=arch, d_in=32, d_sae=96, k=6, l=16)
    res = train_sae(batch_source(x[:24_000], 512), cfg,
                    TrainerConfig(total_tokens=512 * 40, batch_size=512, lr=3e-3, seed=0))
    l0 = (res.sae.encode(x[24_000:]) != 0).sum(-1).float().mean().item()
    assert l0 == pytest.approx(6, rel=0.2)


def test_aux_k_runs_on_dead_latents_and_not_at_coefficient_zero():
    x, _ = planted(8192, seed=2)
    cfg = SAEConfig(arch="batchtopk", d_in=32, d_sae=256, k=1)  # 512 codes a batch: many dead
    runs = {c: train_sae(batch_source(x, 512), cfg, TrainerConfig(
        total_tokens=512 * 12, batch_size=512, lr=2e-3, dead_tokens=1024, aux_k_coeff=c, seed=0))
        for c in (1 / 32, 0.0)}
    assert runs[1 / 32].history[-1].aux_dead_fraction > 0.05
    assert all(h.aux > 0 for h in runs[1 / 32].history[2:])   # dead after 2 batches of 512
    assert all(h.aux == 0 for h in runs[0.0].history)        # skipped, not computed and zeroed
    assert all(0 < h.aux_share < 1 for h in runs[1 / 32].history[2:])
    assert all(h.pool_churn is None for h in runs[0.0].history)  # no pool outside Sampled-SAE


def test_sampled_aux_k_counts_silence_only_inside_the_pool():
    """Issue #11's cause: a latent outside the pool cannot fire by design, so it must not become
    "dead" and be trained by AuxK (that collapsed entropy runs: FVU 1.26 at l=4). With a pool of 8
    of 256 latents, the dead latents are at most the pool, never the ~97% outside it."""
    x, _ = planted(8192, seed=2)
    cfg = SAEConfig(arch="sampled", d_in=32, d_sae=256, k=4, l=2.0)
    res = train_sae(batch_source(x, 512), cfg, TrainerConfig(
        total_tokens=512 * 12, batch_size=512, lr=2e-3, dead_tokens=1024, seed=0))
    assert max(h.aux_dead_fraction for h in res.history) <= cfg.pool_size / cfg.d_sae
    churn = [h.pool_churn for h in res.history]
    assert churn[0] is not None and all(0 <= c <= 1 for c in churn)


@pytest.mark.parametrize("d_sae", [64, 1024])  # 1024 > batch: the data init reads ahead 3 batches
def test_resume_is_exact_and_survives_a_corrupt_checkpoint(tmp_path, d_sae):
    x, _ = planted(4096, seed=1)
    cfg = SAEConfig(arch="sampled", d_in=32, d_sae=d_sae, k=4, l=2)
    tcfg = TrainerConfig(total_tokens=256 * 12, batch_size=256, checkpoint_every=3, seed=5,
                         dead_tokens=512)
    straight = train_sae(batch_source(x, 256), cfg, tcfg).sae.state_dict()

    def crash(log, total):
        if log.step == 8:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_sae(batch_source(x, 256), cfg, tcfg, ckpt_dir=tmp_path, on_step=crash)
    newest = sorted(tmp_path.glob("step-*"))[-1]
    assert newest.name == "step-00000006"
    (newest / "state.safetensors").write_bytes(b"garbage")  # a corrupt newest checkpoint
    resumed = train_sae(batch_source(x, 256), cfg, tcfg, ckpt_dir=tmp_path).sae.state_dict()
    for k, v in straight.items():
        assert torch.equal(v, resumed[k]), k


def _lockstep_cfgs():
    # d_sae 64 and 1024 against batches of 256: the data init looks ahead 0 and 3 batches;
    # pool_rule="sample" draws pools from the run's own generator
    # l=64: a pool of 256 latents, some silent in it, so AuxK (and its row draws) runs for Sampled
    return [SAEConfig(arch="sampled", d_in=32, d_sae=1024, k=4, l=64, pool_rule="sample"),
            SAEConfig(arch="batchtopk", d_in=32, d_sae=64, k=4),
            SAEConfig(arch="topk", d_in=32, d_sae=256, k=4)]


def test_lockstep_training_matches_training_alone_and_leaves_the_global_rng():
    from sae_core.training.loop import train_many

    x, _ = planted(4096, seed=3)
    tcfg = TrainerConfig(total_tokens=256 * 10, batch_size=256, seed=4, dead_tokens=256)
    before = torch.get_rng_state()
    together = train_many(batch_source(x, 256), _lockstep_cfgs(), tcfg)
    assert torch.equal(torch.get_rng_state(), before)  # training draws from its runs' generators only
    for cfg, res in zip(_lockstep_cfgs(), together):
        alone = train_sae(batch_source(x, 256), cfg, tcfg)
        assert [h.loss for h in res.history] == [h.loss for h in alone.history]
        for name, v in alone.sae.state_dict().items():
            assert torch.equal(res.sae.state_dict()[name], v), (cfg.arch, name)
    assert any(h.aux > 0 for h in together[0].history)  # AuxK (and its row draws) ran


def test_lockstep_resumes_at_the_newest_step_every_run_has(tmp_path):
    """A crash between two runs' saves: one run has step 6, the others stop at 3; all resume at 3."""
    from sae_core.training.loop import train_many

    x, _ = planted(4096, seed=3)
    tcfg = TrainerConfig(total_tokens=256 * 10, batch_size=256, seed=4, dead_tokens=512, checkpoint_every=3)
    dirs = [tmp_path / str(i) for i in range(3)]
    straight = train_many(batch_source(x, 256), _lockstep_cfgs(), tcfg)

    def crash(log, total):
        if log.step == 8:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_many(batch_source(x, 256), _lockstep_cfgs(), tcfg, ckpt_dirs=dirs, on_steps=[None, crash, None])
    for d in dirs[1:]:  # as if the crash came right after the first run saved step 6
        shutil.rmtree(d / "step-00000006")
    steps = []
    resumed = train_many(batch_source(x, 256), _lockstep_cfgs(), tcfg, ckpt_dirs=dirs,
                         on_steps=[lambda log, total: steps.append(log.step), None, None])
    assert steps[0] == 4
    for a, b in zip(straight, resumed):
        for name, v in a.sae.state_dict().items():
            assert torch.equal(b.sae.state_dict()[name], v), name


def test_trainer_rejects_nan_and_width_mismatch():
    x = torch.randn(1024, 32)
    x[700, 3] = float("nan")
    cfg = SAEConfig(arch="topk", d_in=32, d_sae=64, k=4)
    with pytest.raises(SAECoreError, match="NaN or Inf"):
        train_sae(batch_source(x, 256), cfg, TrainerConfig(total_tokens=1024, batch_size=256, seed=0))
    with pytest.raises(SAECoreError, match="width mismatch"):
        train_sae(batch_source(torch.randn(512, 20), 256), cfg, TrainerConfig(total_tokens=512, batch_size=256))


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "relu"])
def test_fold_scale_makes_the_sae_read_raw_activations(arch):
    from sae_core.training.initialization import fold_scale

    torch.manual_seed(0)
    sae = create_sae(_cfg(arch)).train()
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    sae(torch.randn(64, 16) * 7)  # a threshold in the scaled space
    sae.eval()
    x, s = torch.randn(30, 16) * 100, 0.07
    scaled = sae(x * s)
    fold_scale(sae, s)
    raw = sae(x)
    assert torch.allclose(raw.z * s, scaled.z, atol=1e-5)
    assert torch.allclose(raw.x_hat * s, scaled.x_hat, atol=1e-4)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)


def test_training_on_badly_scaled_activations_still_reconstructs():
    x, _ = planted(2048, seed=2)
    x = x * 40 + 3  # far from unit scale
    cfg = SAEConfig(arch="topk", d_in=32, d_sae=64, k=3)
    res = train_sae(batch_source(x, 256), cfg, TrainerConfig(total_tokens=256 * 60, batch_size=256, lr=3e-3))
    out = res.sae(x[:512])
    fvu = (out.x_hat - x[:512]).pow(2).sum() / (x[:512] - x[:512].mean(0)).pow(2).sum()
    assert fvu < 0.7 and res.scale == pytest.approx(32 ** 0.5 / x[:256].norm(dim=1).mean().item(), rel=0.2)


# --- SAELens layout -------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "sampled"])
def test_save_load_round_trip(tmp_path, arch):
    torch.manual_seed(0)
    sae = create_sae(_cfg(arch, model_name="zoo:tiny-a", hook_name="blocks.1.hook_resid_post")).train()
    sae(torch.randn(64, 16))  # sets a threshold for the BatchTopK family
    sae.eval()
    save_sae(sae, tmp_path, log10_density=torch.full((64,), -2.0))
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == {"relu": "standard", "topk": "topk"}.get(arch, "jumprelu")
    assert cfg["meta"]["hook_name"] == "blocks.1.hook_resid_post"
    back = load_sae(tmp_path)
    x = torch.randn(10, 16)
    assert torch.equal(back.encode(x), sae.encode(x))
    assert torch.equal(load_density(tmp_path), torch.full((64,), -2.0))


def test_exported_batchtopk_encodes_the_same_as_a_jumprelu(tmp_path):
    torch.manual_seed(0)
    sae = create_sae(_cfg("sampled")).train()
    sae(torch.randn(64, 16))
    sae.eval()
    save_sae(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    del cfg["sae_studio"]  # what SAELens sees
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    as_jumprelu = load_sae(tmp_path)
    assert as_jumprelu.cfg.arch == "jumprelu"
    x = torch.randn(20, 16)
    assert torch.allclose(as_jumprelu.encode(x), sae.encode(x))


def test_saelens_trained_standard_sae_without_b_dec_on_input(tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    w = {"W_enc": torch.randn(16, 32, generator=g), "b_enc": torch.randn(32, generator=g),
         "W_dec": torch.randn(32, 16, generator=g), "b_dec": torch.randn(16, generator=g)}
    save_file(w, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps({
        "architecture": "standard", "d_in": 16, "d_sae": 32, "apply_b_dec_to_input": False,
        "meta": {"model_name": "gpt2", "hook_name": "blocks.8.hook_resid_pre"}}))
    sae = load_sae(tmp_path)
    x = torch.randn(5, 16, generator=g)
    ref = torch.relu(x @ w["W_enc"] + w["b_enc"])
    assert torch.allclose(sae.encode(x), ref, atol=1e-5)
    assert torch.allclose(sae(x).x_hat, ref @ w["W_dec"] + w["b_dec"], atol=1e-4)
    assert sae.cfg.hook_name == "blocks.8.hook_resid_pre"


def _saelens_dir(tmp_path, **cfg):
    """A SAELens-format directory of a random 16 -> 32 SAE with these cfg.json fields; its weights."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    w = {"W_enc": torch.randn(16, 32, generator=g), "b_enc": torch.randn(32, generator=g),
         "W_dec": torch.randn(32, 16, generator=g), "b_dec": torch.randn(16, generator=g)}
    save_file(w, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": 16, "d_sae": 32,
                                                   "meta": {"hook_name": "blocks.0.hook_resid_pre"}, **cfg}))
    return w


@pytest.mark.parametrize("fields,error,says", [
    (dict(architecture="topk"), ArtifactError, "a topk SAE needs its k .* in the field 'k' \\(got None\\)"),
    (dict(architecture="topk", k=4.5), ArtifactError, "field 'k' \\(got 4.5\\)"),
    (dict(normalize_activations="layer_norm"), SAEConfigError,
     "normalize_activations='layer_norm' is not supported"),
    (dict(normalize_activations="constant_norm_rescale"), SAEConfigError,
     "normalize_activations='constant_norm_rescale'"),
    (dict(normalize_activations="expected_average_only_in"), SAEConfigError,
     "normalize_activations='expected_average_only_in' .* activation_scaler.json holds none"),
    (dict(reshape_activations="hook_z"), SAEConfigError, "reshape_activations='hook_z' is not supported"),
    (dict(hook_head_index=3), SAEConfigError, "hook_head_index=3 is not supported"),
    (dict(meta={"hook_name": "blocks.0.attn.hook_z", "hook_head_index": 0}), SAEConfigError,
     "hook_head_index=0 is not supported"),
    (dict(activation_fn_str="tanh-relu"), SAEConfigError, "activation_fn_str='tanh-relu' is not supported"),
])
def test_saelens_settings_we_cannot_honour_are_refused_by_name(tmp_path, fields, error, says):
    """They used to be ignored: k defaulted to 32, the rest computed something else (issue #11)."""
    _saelens_dir(tmp_path, **fields)
    with pytest.raises(error, match=says):
        load_sae(tmp_path)


def test_saelens_k_and_settings_that_change_nothing_load(tmp_path):
    _saelens_dir(tmp_path, architecture="topk", k=4, normalize_activations="none",
                 reshape_activations="none", hook_head_index=None)
    assert load_sae(tmp_path).cfg.k == 4
    # older SAELens wrote TopK as a standard SAE with a topk activation: it was loaded as ReLU
    _saelens_dir(tmp_path, activation_fn_str="topk", activation_fn_kwargs={"k": 3})
    sae = load_sae(tmp_path)
    assert (sae.cfg.arch, sae.cfg.k) == ("topk", 3)
    assert ((sae.encode(torch.randn(8, 16)) != 0).sum(1) <= 3).all()


def test_saelens_expected_average_norm_is_folded_from_the_scaler_file(tmp_path):
    """Trained on x * s (SAELens's checkpoints keep s in activation_scaler.json): the loaded SAE
    reads raw x and reconstructs raw x, x_hat = SAE_trained(x * s) / s."""
    w = _saelens_dir(tmp_path, normalize_activations="expected_average_only_in")
    (tmp_path / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 0.25}))
    sae = load_sae(tmp_path)
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(1)) * 4
    z_ref = torch.relu((x * 0.25 - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    torch.testing.assert_close(sae.encode(x), z_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x).x_hat, (z_ref @ w["W_dec"] + w["b_dec"]) / 0.25, rtol=1e-4, atol=1e-4)
    (tmp_path / "activation_scaler.json").write_text(json.dumps({"scaling_factor": None}))
    with pytest.raises(SAEConfigError, match="holds none \\(got None\\)"):
        load_sae(tmp_path)


def test_saelens_finetuning_scaling_factor_is_folded_into_the_decoder(tmp_path):
    """Older SAELens decodes (z * f) @ W_dec + b_dec when finetuning_scaling_factor is set."""
    from safetensors.torch import save_file

    w = _saelens_dir(tmp_path, finetuning_scaling_factor=True)
    with pytest.raises(ArtifactError, match="holds no 'finetuning_scaling_factor' tensor of shape \\(32,\\)"):
        load_sae(tmp_path)
    f = torch.rand(32, generator=torch.Generator().manual_seed(2)) + 0.5
    save_file({**w, "finetuning_scaling_factor": f}, str(tmp_path / "sae_weights.safetensors"))
    sae = load_sae(tmp_path)
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(1))
    z_ref = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    torch.testing.assert_close(sae.encode(x), z_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x).x_hat, (z_ref * f) @ w["W_dec"] + w["b_dec"], rtol=1e-4, atol=1e-4)


def test_foreign_and_broken_sae_directories(tmp_path):
    with pytest.raises(ArtifactError, match="not an SAE directory"):
        load_sae(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "crosscoder", "d_in": 4, "d_sae": 8}))
    with pytest.raises(SAEConfigError, match="unknown SAE architecture 'crosscoder'"):
        load_sae(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": 4, "d_sae": 8}))
    (tmp_path / "sae_weights.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ArtifactError, match="safetensors"):
        load_sae(tmp_path)


# --- downstream metrics (the SAE spliced into a zoo model) -------------------------------------

def test_splice_identity_and_zero_sae_give_reference_values(tiny_a):
    """An SAE that reconstructs exactly recovers 100%; the hand-computed CE matches the model's."""
    from sae_core.sae.splice import downstream_metrics, eval_tokens

    d = tiny_a.cfg.d_model
    cfg = SAEConfig(arch="relu", d_in=d, d_sae=2 * d)
    exact = create_sae(cfg).eval()
    with torch.no_grad():  # z = relu([x, -x]), x_hat = z_+ - z_-  reconstructs x exactly
        eye = torch.eye(d)
        exact.W_enc.copy_(torch.cat([eye, -eye], 1))
        exact.W_dec.copy_(torch.cat([eye, -eye], 0))
        exact.b_enc.zero_()
        exact.b_dec.zero_()
    toks = eval_tokens(tiny_a, n_seqs=8)
    m = downstream_metrics(tiny_a, exact, "blocks.0.hook_resid_post", toks)
    assert m.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert m.kl_sae == pytest.approx(0.0, abs=1e-6) and m.kl_recovered == pytest.approx(1.0, abs=1e-4)
    assert m.ce_zero > m.ce_clean
    # CE of the clean model by hand, over non-pad targets
    with torch.no_grad():
        logits = tiny_a(toks)
    logp = torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, toks[:, 1:, None]).squeeze(-1)
    pad = tiny_a.tokenizer.pad_token_id
    ok = toks[:, 1:] != pad
    assert m.ce_clean == pytest.approx(-logp[ok].mean().item(), rel=1e-6)

    dead = create_sae(cfg).eval()  # decodes everything to zero: no better than the floor
    with torch.no_grad():
        dead.b_enc.fill_(-1e6)
    m0 = downstream_metrics(tiny_a, dead, "blocks.0.hook_resid_post", toks)
    assert m0.ce_loss_recovered == pytest.approx(0.0, abs=1e-6)


def test_batch_rule_ce_matches_a_hand_reference(tiny_a):
    """The batch rule's CE: the training rule over consecutive groups of kept tokens of the whole
    evaluation text (groups cross forward batches), patched back where each token came from."""
    from sae_core.models.loading import keep_mask_BT
    from sae_core.sae.splice import downstream_metrics, eval_tokens

    hook, d = "blocks.0.hook_resid_post", tiny_a.cfg.d_model
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="batchtopk", d_in=d, d_sae=4 * d, k=4)).eval()
    with torch.no_grad():
        sae.threshold.fill_(0.5)
    toks = eval_tokens(tiny_a, n_seqs=7)
    m = downstream_metrics(tiny_a, sae, hook, toks, batch_size=3, batch_rule_tokens=100)
    tok = tiny_a.tokenizer
    mask = keep_mask_BT(toks, tok.pad_token_id, sorted(tok.all_special_ids), True)
    with torch.no_grad():
        _, cache = tiny_a.run_with_cache(toks, names_filter=[hook])
        x = cache[hook][mask]
        x_hat = torch.cat([sae.decode(sae.encode_batch_rule(x[s:s + 100])) for s in range(0, len(x), 100)])

        def put(acts, **_):
            out = acts.clone()
            out[mask] = x_hat
            return out
        with tiny_a.hooks(fwd_hooks=[(hook, put)]):
            logits = tiny_a(toks)
    logp = torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, toks[:, 1:, None]).squeeze(-1)
    ok = keep_mask_BT(toks, tok.pad_token_id, [], False)[:, 1:]
    assert m.ce_sae_batch_rule == pytest.approx(-logp[ok].mean().item(), rel=1e-5)
    assert m.ce_loss_recovered_batch_rule == pytest.approx(
        (m.ce_zero - m.ce_sae_batch_rule) / (m.ce_zero - m.ce_clean), rel=1e-9)
    assert m.ce_sae_batch_rule != pytest.approx(m.ce_sae, rel=1e-3)  # the rules differ here
    # an SAE without a batch rule reports none
    relu = create_sae(SAEConfig(arch="relu", d_in=d, d_sae=2 * d)).eval()
    assert "ce_loss_recovered_batch_rule" not in downstream_metrics(tiny_a, relu, hook, toks).to_json()


def test_splicing_an_sae_of_the_wrong_width_is_a_clear_error(tiny_a):
    from sae_core.sae.splice import downstream_metrics, eval_tokens

    sae = create_sae(SAEConfig(arch="topk", d_in=64, d_sae=128, k=4, hook_name="elsewhere")).eval()
    with pytest.raises(SAECoreError, match="width mismatch: blocks.0.hook_resid_post has d=128"):
        downstream_metrics(tiny_a, sae, "blocks.0.hook_resid_post", eval_tokens(tiny_a, n_seqs=2))


def test_the_splice_computes_on_the_saes_device_and_dtype_and_returns_the_models():
    """A trained SAE and the model may sit on different devices (a CUDA model, an SAE moved to
    the CPU: issue #11); the reconstruction goes to the SAE and comes back. Here: dtypes."""
    from sae_core.sae.splice import reconstruct

    sae = create_sae(_cfg("relu", dtype="float64")).eval()
    acts_BTD = torch.randn(2, 3, 16)
    seen = []
    sae.register_forward_pre_hook(lambda mod, args: seen.append((args[0].device, args[0].dtype)))
    out = reconstruct(sae, acts_BTD)
    assert seen == [(sae.device, torch.float64)]
    assert (out.shape, out.device, out.dtype) == (acts_BTD.shape, acts_BTD.device, torch.float32)
    torch.testing.assert_close(out, sae(acts_BTD.reshape(6, 16).double()).x_hat.float().reshape(2, 3, 16))


def test_density_histogram_matches_numpy():
    from sae_core.sae.metrics import density_histogram

    rng = np.random.default_rng(5)
    density = 10 ** rng.uniform(-7, 0, size=500)
    density[:20] = 0.0  # dead latents land in the first bin
    edges, counts = density_histogram(torch.tensor(density), bins=16)
    ref_counts, ref_edges = np.histogram(np.log10(np.maximum(density, 1e-8)), bins=16, range=(-8, 0))
    np.testing.assert_allclose(edges, ref_edges, atol=1e-6)
    assert counts == ref_counts.tolist() and sum(counts) == 500
