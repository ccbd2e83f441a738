"""Workspace runs: SAEs trained in lockstep groups that fit memory, checkpointed, resumed after a
crash, and the same whichever way they were grouped."""
import numpy as np
import pytest

from sae_core.activations import import_to_workspace
from sae_core.sae import SAEConfig
from sae_core.training import job as runs
from sae_core.training.sweep import SweepConfig, load_sweep_table, run_sweep
from sae_core.training.loop import TrainerConfig, run_bytes
from sae_core.workspace import Workspace
from tests.helpers import planted


def test_lockstep_groups_fit_the_budget():
    tcfg = TrainerConfig(total_tokens=4096, batch_size=256)
    cfgs = [SAEConfig(arch="topk", d_in=16, d_sae=s, k=2) for s in (64, 64, 128, 64)]
    assert run_bytes(cfgs[0], tcfg) == 4 * 64 * (8 * 16 + 256)  # 98,304: float32, d_sae x (8 d_in + batch)
    assert run_bytes(cfgs[0], tcfg, with_buffer=False) == 4 * 64 * 8 * 16  # 32,768: the buffer is shared
    assert runs.lockstep_groups(cfgs, tcfg, budget=98_304 + 32_768) == [[0, 1], [2], [3]]
    assert runs.lockstep_groups(cfgs, tcfg, budget=98_304 + 32_767) == [[0], [1], [2], [3]]
    assert runs.lockstep_groups(cfgs, tcfg, budget=10**9) == [[0, 1, 2, 3]]


def _workspace(tmp_path, name):
    path = tmp_path / "planted.npy"
    if not path.exists():
        np.save(path, (planted(6000, d_in=16, n_true=24, seed=1)[0] + 0.2).numpy())
    ws = Workspace(tmp_path / name)
    return ws, import_to_workspace(ws, path)


SWEEP = SweepConfig(k=3, d_sae=64, ls=(1.0, 4.0), scorings=("l2", "entropy"), tokens=256 * 40, batch_size=256)
METRICS = ["l0", "fvu", "mse", "distinct_latents_per_batch", "pairwise_overlap", "dead_fraction"]


def test_a_sweep_is_the_same_in_one_group_or_many_and_resumes_after_a_crash(tmp_path, monkeypatch):
    ws, acts = _workspace(tmp_path, "one")
    seen = []
    one = load_sweep_table(run_sweep(ws, acts, SWEEP, on_progress=lambda *a: seen.append(a)))
    steps, n = 40, 6  # 4 Sampled-SAEs, BatchTopK and TopK, all in one group
    assert seen[-1] == (steps + n, steps + n, "done")
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen) and {t for _, t, _ in seen} == {steps + n}
    assert "training 6 SAEs in lockstep: step 40/40" in [t for *_, t in seen]
    assert not any((ws.root / ".checkpoints").iterdir())  # removed once each SAE is registered

    monkeypatch.setattr(runs, "memory_budget", lambda: 1)  # every SAE in a group of its own
    ws, acts = _workspace(tmp_path, "many")

    def crash(done, total, text):
        if text.startswith("training 1 SAE, group 3/6: step 30/"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_sweep(ws, acts, SWEEP, on_progress=crash)
    assert len(ws.list("sae")) == 2  # groups 1 and 2 finished; group 3 left a checkpoint at step 25
    [ckpt] = [d for d in (ws.root / ".checkpoints").iterdir() if any(d.iterdir())]
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-00000025"]
    seen.clear()
    many = load_sweep_table(run_sweep(ws, acts, SWEEP, on_progress=lambda *a: seen.append(a)))
    assert seen[0][0] == 26 and seen[0][1] == 4 * steps + 4  # resumed at step 26 of group 3 of the 4 left
    assert list(one["sae"]) == list(many["sae"])  # the same runs (names hash what changes the weights)
    for m in METRICS:
        assert list(one[m]) == list(many[m]), m


@pytest.mark.parametrize("bad,says", [(dict(pool_rule="best"), "pool_rule='best'"),
                                      (dict(scorings=("kl",)), "scorings=\\['kl'\\]"),
                                      (dict(scorings=()), "scorings=\\[\\]"),
                                      (dict(tokens=100), "less than one batch"),
                                      (dict(ls=(0.5, 2.0)), "every l must be a finite number >= 1 \\(got \\[0.5\\]\\)")])
def test_a_bad_sweep_is_refused_before_any_work(bad, says):
    from sae_core.errors import SAECoreError

    with pytest.raises(SAECoreError, match=says):
        SweepConfig(**{**dict(k=3, d_sae=64, ls=(1.0,), tokens=4096, batch_size=256), **bad})


def test_evaluating_sampled_pools_does_not_depend_on_the_global_rng():
    """A pool_rule="sample" SAE draws its evaluation pools from a generator seeded in
    ``evaluate_sae`` (the trainer takes its own away at the end, so they came from torch's global
    RNG and the metrics changed from run to run: issue #11); the SAE's generator is put back."""
    import torch

    from sae_core.sae import create_sae

    x_ND = planted(2048, d_in=16, n_true=24, seed=2)[0] + 0.2
    sae = create_sae(SAEConfig(arch="sampled", d_in=16, d_sae=64, k=3, l=2.0, pool_rule="sample")).train()
    sae(x_ND[:256])  # a threshold and pool frequencies for the inference rule
    results = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        results.append(runs.evaluate_sae(sae, [x_ND[s:s + 256] for s in range(0, 2048, 256)], 256))
    assert sae.pool_generator is None
    first, second = results
    assert torch.equal(first.pop("log10_density"), second.pop("log10_density"))
    assert first == second


def test_a_sweep_holds_the_model_lock_only_for_the_downstream_passes(tmp_path, tiny_a):
    """The app shares one model between tabs: training must run without its lock."""
    from sae_core.activations import harvest_to_workspace
    from sae_core.training.sweep import SweepConfig, run_sweep
    from sae_core.workspace import Workspace

    class Probe:
        held, entries = False, 0

        def __enter__(self):
            assert not self.held
            self.held, self.entries = True, self.entries + 1

        def __exit__(self, *exc):
            self.held = False

    ws, probe, during_training = Workspace(tmp_path / "ws"), Probe(), []
    acts = harvest_to_workspace(ws, "zoo:tiny-a", "blocks.1.hook_resid_post", n_tokens=3000, model=tiny_a)
    sc = SweepConfig(k=4, d_sae=32, ls=(1.0,), scorings=("l2",), tokens=2048, batch_size=512)
    art = run_sweep(ws, acts, sc, model=tiny_a, model_lock=probe,
                    on_progress=lambda d, t, text: during_training.append(probe.held) if "training" in text else None)
    assert during_training and not any(during_training)
    assert probe.entries == art.meta["n_saes"] == len(sc.sae_configs(tiny_a.cfg.d_model, "", "")) > 1
    assert not probe.held


def test_a_run_without_clipping_keeps_the_name_it_had_before_clipping_existed():
    """grad_clip=None (and the calibrated threshold) train as before issue #29 added them: such SAEs
    keep their names (pinned from the code before); the clipped default is another run, another name."""
    from pathlib import Path

    from sae_core.sae.config import SAEConfig
    from sae_core.training.config import TrainerConfig
    from sae_core.training.job import sae_run_name
    from sae_core.workspace import Artifact

    acts = Artifact("activations", "tiny-a__blocks.1.hook_resid_post__773c19705d", Path("."), "zoo:tiny-a",
                    "blocks.1.hook_resid_post", 0.0, {})
    cfg = SAEConfig(arch="batchtopk", d_in=128, d_sae=512, k=16)
    tcfg = TrainerConfig(total_tokens=1_000_000, batch_size=1024, grad_clip=None)
    assert sae_run_name(acts, cfg, tcfg) == "tiny-a__blocks.1.hook_resid_post__e4d291e491"
    assert sae_run_name(acts, cfg, TrainerConfig(total_tokens=1_000_000, batch_size=1024)) == \
        "tiny-a__blocks.1.hook_resid_post__3377e81a64"
    ema = TrainerConfig(total_tokens=1_000_000, batch_size=1024, grad_clip=None, threshold="ema", threshold_start=10)
    assert sae_run_name(acts, cfg, ema) not in ("tiny-a__blocks.1.hook_resid_post__e4d291e491",
                                               sae_run_name(acts, cfg, TrainerConfig(
                                                   total_tokens=1_000_000, batch_size=1024, grad_clip=None,
                                                   threshold="ema", threshold_start=20)))
