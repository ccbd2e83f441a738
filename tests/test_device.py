"""The SAE engine on an accelerator (issue #3: "runs on CPU and CUDA").

Skipped unless CUDA is available, or ``SAE_STUDIO_TEST_DEVICE`` names a device (``cpu`` runs the
same checks here, to keep the tests themselves honest on machines without a GPU). Only torch and
``sae_core.sae`` are needed, so a GPU machine with a stock PyTorch runs them from a plain checkout:

    PYTHONPATH=. python3 -m pytest -q -p no:cacheprovider tests/test_device.py

What is checked on the device: the fast kernels against the plain path there (codes, gradients,
AuxK); the device against the CPU for the same weights and input (float64, so the selections
are the same); a short training run per architecture, its checkpoint resume, its inference rule,
and a save on the device loaded back on the CPU; two SAEs in lockstep, one drawing its pools on
the CPU generator while it trains on the device, against training alone and after a crash. CUDA's scatter-adds are not deterministic, so
device results are compared with tolerances, not bit for bit. With transformer-lens installed,
also the workspace paths that put a model and an SAE together (issue #11: the trained SAE went to
the CPU while the model's activations stayed on CUDA): ``train_to_workspace`` with the model's
downstream metrics, and the demo's path, a sweep with the model and a feature index of one of
its SAEs. Issue #15: a training step on CUDA under ``torch.cuda.set_sync_debug_mode("error")``
(no host synchronisation in the hot loop; ``tests/test_sync_free.py`` checks the same property
on the CPU with fake tensors), and bf16 autocast on the device.
"""
import math
import os

import pytest
import torch

from sae_core.sae import SAEConfig, create_sae, kernels
from sae_core.sae.io import load_sae, save_sae
from sae_core.training.step import aux_k_loss
from sae_core.training.loop import TrainerConfig, train_sae
from tests.helpers import batch_source, planted, sae_state

DEVICE = os.environ.get("SAE_STUDIO_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no CUDA device (set SAE_STUDIO_TEST_DEVICE "
                                                       "to run these checks on another device)")
ARCHS = ["topk", "batchtopk", "sampled"]


@pytest.fixture(autouse=True)
def restore_kernels():
    old = kernels.kernels_mode()
    yield
    kernels.set_kernels(old)


def _step(cfg, state, x_ND, mode, device, dead_S=None):
    """One training forward + MSE (+ AuxK) + backward on ``device``; results on the CPU."""
    kernels.set_kernels(mode)
    sae = create_sae(cfg).to(device).train()
    sae.load_state_dict(state)
    x_ND = x_ND.to(device)
    out = sae(x_ND)
    loss = (out.x_hat - x_ND).pow(2).sum(-1).mean()
    if dead_S is not None:
        loss = loss + aux_k_loss(sae, x_ND, out, dead_S.to(device))
    loss.backward()
    grads = {n: p.grad.cpu() for n, p in sae.named_parameters()}
    return out.z.cpu(), out.x_hat.detach().cpu(), grads


@pytest.mark.parametrize("arch", ARCHS)
def test_fast_kernels_agree_with_the_plain_path_on_the_device(arch):
    cfg = SAEConfig(arch=arch, d_in=32, d_sae=512, k=8, l=4.0)
    state = sae_state(cfg, seed=1)
    x_ND = torch.randn(1024, 32, generator=torch.Generator().manual_seed(1))
    dead_S = torch.rand(512, generator=torch.Generator().manual_seed(2)) < 0.8  # AuxK's block path
    z_p, xh_p, g_p = _step(cfg, state, x_ND, "plain", DEVICE, dead_S)
    z_f, xh_f, g_f = _step(cfg, state, x_ND, "fast", DEVICE, dead_S)
    assert torch.equal(z_p != 0, z_f != 0)
    torch.testing.assert_close(z_f, z_p, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xh_f, xh_p, rtol=1e-4, atol=1e-4)
    for name, g in g_p.items():
        torch.testing.assert_close(g_f[name], g, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_device_computes_what_the_cpu_computes(arch):
    cfg = SAEConfig(arch=arch, d_in=32, d_sae=256, k=6, l=4.0, dtype="float64")
    state = sae_state(cfg, seed=3)
    x_ND = torch.randn(512, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    dead_S = torch.rand(256, generator=torch.Generator().manual_seed(4)) < 0.5
    z_c, xh_c, g_c = _step(cfg, state, x_ND, "fast", "cpu", dead_S)
    z_d, xh_d, g_d = _step(cfg, state, x_ND, "fast", DEVICE, dead_S)
    assert torch.equal(z_c != 0, z_d != 0)  # the same selection: top-k, batch top-k, pool
    torch.testing.assert_close(z_d, z_c)
    torch.testing.assert_close(xh_d, xh_c)
    for name, g in g_c.items():
        torch.testing.assert_close(g_d[name], g, msg=name)


def test_masked_topk_on_the_device_matches_the_cpu():
    acts_NS = torch.randn(256, 2048, generator=torch.Generator().manual_seed(5))
    cols_S = torch.rand(2048, generator=torch.Generator().manual_seed(5)) < 0.9
    want = kernels.masked_topk_row_indices(acts_NS, cols_S, 64, block=1)
    for block in (None, 1, 8):
        rows_M, cols_M = kernels.masked_topk_row_indices(acts_NS.to(DEVICE), cols_S.to(DEVICE), 64,
                                                         block=block)
        assert set(zip(rows_M.tolist(), cols_M.tolist())) == set(zip(*(t.tolist() for t in want)))


def _planted(n: int) -> torch.Tensor:
    return planted(n, d_in=32, n_true=64, per_token=4)[0] + 0.3


@pytest.mark.parametrize("arch", ARCHS)
def test_training_on_the_device_learns_resumes_and_saves(arch, tmp_path):
    x_ND = _planted(8192)
    cfg = SAEConfig(arch=arch, d_in=32, d_sae=256, k=4, l=4.0)
    tcfg = TrainerConfig(total_tokens=512 * 24, batch_size=512, lr=3e-3, warmup_steps=0, checkpoint_every=6,
                         dead_tokens=1024, seed=7, device=DEVICE)
    straight = train_sae(batch_source(x_ND, 512), cfg, tcfg)
    assert straight.sae.W_enc.device.type == torch.device(DEVICE).type
    losses = [h.loss for h in straight.history]
    assert sum(losses[-6:]) < 0.95 * sum(losses[:6])  # it learns (24 steps: -14% to -21% on the CPU)
    if arch != "sampled":  # (its pool keeps these 256 latents alive: no AuxK in 24 steps, also on the CPU)
        assert any(h.aux > 0 for h in straight.history)  # AuxK ran on the device

    def crash(log, total):
        if log.step == 15:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_sae(batch_source(x_ND, 512), cfg, tcfg, ckpt_dir=tmp_path / "ckpt", on_step=crash)
    resumed = train_sae(batch_source(x_ND, 512), cfg, tcfg, ckpt_dir=tmp_path / "ckpt")
    assert resumed.history[0].step == 13  # from the step-12 checkpoint
    for name, v in straight.sae.state_dict().items():
        torch.testing.assert_close(resumed.sae.state_dict()[name], v, rtol=1e-3, atol=1e-4, msg=name)

    # inference on the device; the saved SAE loads on the CPU and encodes the same
    x_eval = x_ND[:1000]
    with torch.no_grad():
        z_dev = straight.sae.encode(x_eval.to(DEVICE)).cpu()
        x_hat = straight.sae(x_eval.to(DEVICE)).x_hat.cpu()
    l0 = (z_dev != 0).sum(-1).float().mean().item()
    assert 0.5 * cfg.k <= l0 <= 2 * cfg.k
    fvu = ((x_eval - x_hat).pow(2).sum() / (x_eval - x_eval.mean(0)).pow(2).sum()).item()
    assert fvu < 0.8  # 0.31 / 0.40 / 0.65 for topk / batchtopk / sampled on the CPU
    save_sae(straight.sae, tmp_path / "sae")
    on_cpu = load_sae(tmp_path / "sae")
    with torch.no_grad():
        z_cpu = on_cpu.encode(x_eval)
    both = (z_cpu != 0) & (z_dev != 0)
    assert torch.ne(z_cpu != 0, z_dev != 0).float().mean() < 1e-3  # only threshold-edge flips
    torch.testing.assert_close(z_cpu[both], z_dev[both], rtol=1e-3, atol=1e-3)


def test_lockstep_on_the_device_with_sampled_pools_resumes(tmp_path):
    """Two SAEs in lockstep on the device, one drawing its pools (pool_rule="sample": the draw
    runs on the run's CPU generator, the scores on the device): each matches its run alone, and
    a crashed group resumes to the same weights."""
    from sae_core.training.loop import train_many

    x_ND = _planted(8192)
    cfgs = [SAEConfig(arch="sampled", d_in=32, d_sae=256, k=4, l=2.0, pool_rule="sample"),
            SAEConfig(arch="batchtopk", d_in=32, d_sae=256, k=4)]
    tcfg = TrainerConfig(total_tokens=512 * 16, batch_size=512, lr=3e-3, warmup_steps=0, checkpoint_every=5,
                         dead_tokens=1024, seed=3, device=DEVICE)
    together = train_many(batch_source(x_ND, 512), cfgs, tcfg)
    alone = train_sae(batch_source(x_ND, 512), cfgs[0], tcfg)

    def crash(log, total):
        if log.step == 12:
            raise KeyboardInterrupt
    dirs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(KeyboardInterrupt):
        train_many(batch_source(x_ND, 512), cfgs, tcfg, ckpt_dirs=dirs, on_steps=[crash, None])
    resumed = train_many(batch_source(x_ND, 512), cfgs, tcfg, ckpt_dirs=dirs)
    for name, v in alone.sae.state_dict().items():
        torch.testing.assert_close(together[0].sae.state_dict()[name], v, rtol=1e-3, atol=1e-4, msg=name)
    for a, b in zip(together, resumed):
        assert b.history[0].step == 11  # from the step-10 checkpoint
        for name, v in a.sae.state_dict().items():
            torch.testing.assert_close(b.sae.state_dict()[name], v, rtol=1e-3, atol=1e-4, msg=name)


@pytest.fixture(scope="module")
def tiny_a_on_device():
    pytest.importorskip("transformer_lens")
    from sae_core.models.loading import load_model

    return load_model("zoo:tiny-a", device=DEVICE)


HOOK = "blocks.1.hook_resid_post"


@pytest.mark.parametrize("train_on", [DEVICE, "cpu"])
def test_a_workspace_run_with_the_model_on_the_device_gets_its_downstream_metrics(
        tiny_a_on_device, tmp_path, train_on):
    from sae_core.activations import harvest_to_workspace
    from sae_core.io import read_json
    from sae_core.training.job import train_to_workspace
    from sae_core.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    acts = harvest_to_workspace(ws, "zoo:tiny-a", HOOK, n_tokens=4000, model=tiny_a_on_device)
    cfg = SAEConfig(arch="topk", d_in=acts.meta["d"], d_sae=64, k=4)
    tcfg = TrainerConfig(total_tokens=512 * 8, batch_size=512, device=train_on)
    metrics = read_json(train_to_workspace(ws, acts, cfg, tcfg, model=tiny_a_on_device).path / "metrics.json")
    assert metrics["ce_clean"] < metrics["ce_sae"] < metrics["ce_zero"]
    assert 0 < metrics["ce_loss_recovered"] <= 1


def test_the_demo_path_on_the_device_sweeps_with_the_model_and_indexes(tiny_a_on_device, tmp_path):
    """What ``build_demo`` does, small: a sweep with the model (downstream metrics per SAE), then
    a feature index of one SAE loaded on the CPU, streamed through the model on the device."""
    from sae_core.activations import harvest_to_workspace
    from sae_core.features.job import index_to_workspace
    from sae_core.features.config import IndexConfig
    from sae_core.training.sweep import SweepConfig, load_sweep_table, run_sweep
    from sae_core.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    acts = harvest_to_workspace(ws, "zoo:tiny-a", HOOK, n_tokens=4000, model=tiny_a_on_device)
    sc = SweepConfig(k=4, d_sae=64, ls=(1.0, 4.0), scorings=("l2",), pool_rule="sample", tokens=512 * 8,
                     batch_size=512, device=DEVICE)
    table = load_sweep_table(run_sweep(ws, acts, sc, model=tiny_a_on_device))
    assert len(table) == 4 and table["ce_loss_recovered"].notna().all()
    sae = load_sae(ws.get("sae", table["sae"][0]).path)
    art = index_to_workspace(ws, sae, "zoo:tiny-a", HOOK, IndexConfig(n_tokens=2000, feature_map=False),
                             sae_source=table["sae"][0], model=tiny_a_on_device)
    assert art.meta["n_tokens"] > 0


# --- issue #15: the GPU path -----------------------------------------------------------------

SYNC_CFGS = [SAEConfig(arch="topk", d_in=32, d_sae=512, k=8),
             SAEConfig(arch="batchtopk", d_in=32, d_sae=512, k=8),
             SAEConfig(arch="sampled", d_in=32, d_sae=512, k=8, l=4.0, scoring="l2"),
             SAEConfig(arch="sampled", d_in=32, d_sae=512, k=8, l=4.0, scoring="entropy")]


@pytest.mark.skipif(not str(DEVICE).startswith("cuda"), reason="host syncs exist only on CUDA")
@pytest.mark.parametrize("cfg", SYNC_CFGS, ids=[c.label for c in SYNC_CFGS])
def test_a_training_step_on_cuda_never_synchronises_with_the_host(cfg):
    """The step's hot loop under ``set_sync_debug_mode("error")``: any device-to-host wait
    (``.item()``, ``nonzero``, a blocking copy) raises. The batch comes from the CPU as in
    training (pinned, non-blocking); the numbers are read after, at ``flush``."""
    from sae_core.training.step import FiniteWatch, TrainingRun, to_device

    tcfg = TrainerConfig(total_tokens=1024 * 20, batch_size=1024, warmup_steps=0, dead_tokens=1024, seed=1,
                         device=DEVICE)
    device = torch.device(DEVICE)
    run = TrainingRun(cfg, tcfg, device, None, None, {})
    x = _planted(8192)
    run.init(x[:4096].to(device), x[:4096].to(device))
    for step in range(3):  # the threshold is set, latents die, AuxK runs
        run.step(step, x[step * 1024:(step + 1) * 1024].to(device))
    run.flush()
    watch = FiniteWatch(device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(3, 6):
            batch = to_device(x[step * 1024:(step + 1) * 1024], device)
            watch.check(batch, step)
            run.step(step, batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    run.flush()
    watch.raise_if_bad()
    assert [h.step for h in run.history] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(h.loss) for h in run.history)


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_autocast_trains_on_the_device(arch):
    from dataclasses import replace

    x_ND = _planted(8192)
    cfg = SAEConfig(arch=arch, d_in=32, d_sae=256, k=4, l=4.0)
    tcfg = TrainerConfig(total_tokens=512 * 24, batch_size=512, lr=3e-3, warmup_steps=0, dead_tokens=1024,
                         seed=7, device=DEVICE)
    fp32 = train_sae(batch_source(x_ND, 512), cfg, tcfg)
    bf16 = train_sae(batch_source(x_ND, 512), cfg, replace(tcfg, autocast="bf16"))
    assert bf16.sae.W_enc.dtype == torch.float32
    def ends(r):
        return sum(h.sq_err for h in r.history[:6]), sum(h.sq_err for h in r.history[-6:])
    (first, last), (_, last_fp32) = ends(bf16), ends(fp32)
    assert last < 0.95 * first  # it learns
    assert last == pytest.approx(last_fp32, rel=0.05)  # as float32 does
