"""The SAE trainer: planted features recovered, initialisation, thresholds, AuxK, exact resume,
lockstep, bad input, scale folding."""
import shutil

import pytest
import torch

from sae_core.errors import SAECoreError
from sae_core.sae import SAEConfig, create_sae
from sae_core.sae.metrics import MetricAccumulator
from sae_core.training.loop import TrainerConfig, train_sae
from tests.helpers import batch_source, planted, sae_cfg


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
    sae = create_sae(sae_cfg(arch, d_in=32, d_sae=128, k=4, l=2.0)).train()
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
    sae = create_sae(sae_cfg("batchtopk", d_in=64, d_sae=512, k=4))
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
    sae = create_sae(sae_cfg(arch)).train()
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


def test_grad_clip_bounds_the_norm_each_adam_step_sees(monkeypatch):
    """dictionary_learning's clipping (issue #29): the parallel part removed, then the global norm
    clipped, before Adam steps; without it the norms run past the bound."""
    x, _ = planted(8192, seed=4)
    cfg = SAEConfig(arch="batchtopk", d_in=32, d_sae=96, k=6)
    seen: list[float] = []
    real = torch.optim.Adam.step

    def spy(self, *a, **k):
        seen.append(float(torch.linalg.vector_norm(torch.stack([
            torch.linalg.vector_norm(p.grad) for g in self.param_groups for p in g["params"] if p.grad is not None]))))
        return real(self, *a, **k)
    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    norms = {}
    for clip in (None, 0.05):
        seen.clear()
        train_sae(batch_source(x, 512), cfg, TrainerConfig(total_tokens=512 * 12, batch_size=512, seed=0, grad_clip=clip))
        norms[clip] = list(seen)
    assert len(norms[0.05]) == len(norms[None]) == 12
    assert max(norms[0.05]) <= 0.05 * (1 + 1e-5) and max(norms[None]) > 0.05
    with pytest.raises(SAECoreError, match="grad_clip=0 must be a positive number"):
        TrainerConfig(total_tokens=512, batch_size=512, grad_clip=0)


def test_the_ema_threshold_moves_only_after_its_start_step_and_is_kept(monkeypatch):
    """threshold="ema" is dictionary_learning's rule: no update up to threshold_start, the EMA after,
    and no calibration at the end; the calibrated default recalibrates at the final weights."""
    from sae_core.sae.batchtopk import BatchTopKSAE
    import sae_core.training.step as step_module

    x, _ = planted(8192, seed=5)
    cfg = SAEConfig(arch="batchtopk", d_in=32, d_sae=96, k=6)
    flags, calibrated = [], []
    real_update, real_calibrate = BatchTopKSAE._update_threshold, step_module.calibrate_inference
    monkeypatch.setattr(BatchTopKSAE, "_update_threshold",
                        lambda self, low: flags.append(self.threshold_updates) or real_update(self, low))
    monkeypatch.setattr(step_module, "calibrate_inference",
                        lambda sae, b, threshold=True: calibrated.append(threshold) or real_calibrate(sae, b, threshold))
    ema = train_sae(batch_source(x, 512), cfg, TrainerConfig(total_tokens=512 * 10, batch_size=512, seed=0,
                                                             threshold="ema", threshold_start=6))
    # the first call is the encoder-scale probe before step 0, whose buffers are restored
    assert flags[1:] == [False] * 7 + [True] * 3 and calibrated == [False]
    assert bool(ema.sae.threshold_initialized) and float(ema.sae.threshold) > 0
    flags.clear()
    cal = train_sae(batch_source(x, 512), cfg, TrainerConfig(total_tokens=512 * 10, batch_size=512, seed=0))
    assert flags[1:] == [True] * 10 and calibrated == [False, True]
    assert float(cal.sae.threshold) != pytest.approx(float(ema.sae.threshold))
    with pytest.raises(SAECoreError, match="the threshold would never be set"):
        TrainerConfig(total_tokens=512 * 10, batch_size=512, threshold="ema")
    with pytest.raises(SAECoreError, match="threshold='jump'; choose one of calibrated, ema"):
        TrainerConfig(total_tokens=512, batch_size=512, threshold="jump")
