"""The GPU training step reads nothing on the host (issue #15), checked on a CPU.

On a GPU a host read (``.item()``, ``bool(t)``, ``nonzero``, a boolean-mask index, any op whose
output size depends on the data) makes the host wait for the device. Under a fake-tensor mode
every such op raises, since fake tensors have shapes but no values; so a step that runs through
under it, with the GPU's rules applied (``kernels.emulate_gpu_host_rules``: plain fixed-size
kernels, numbers deferred to ``flush``), has no host synchronisation on any device.
``tests/test_device.py`` checks the same on a real GPU with ``torch.cuda.set_sync_debug_mode``.

Also here: the bfloat16 autocast option, which runs on the CPU too.
"""
from unittest import mock

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from sae_core.sae import SAEConfig, kernels
from sae_core.training.step import FiniteWatch, TrainingRun
from sae_core.training.loop import TrainerConfig, train_sae
from tests.helpers import batch_source, planted

CFGS = [SAEConfig(arch="topk", d_in=16, d_sae=128, k=4),
        SAEConfig(arch="batchtopk", d_in=16, d_sae=128, k=4),
        SAEConfig(arch="sampled", d_in=16, d_sae=128, k=4, l=2.0, scoring="l2"),
        SAEConfig(arch="sampled", d_in=16, d_sae=128, k=4, l=2.0, scoring="entropy"),
        SAEConfig(arch="relu", d_in=16, d_sae=64)]


@pytest.fixture
def gpu_rules():
    old_mode, old_rules = kernels.set_kernels("auto"), kernels.emulate_gpu_host_rules(True)
    yield
    kernels.set_kernels(old_mode)
    kernels.emulate_gpu_host_rules(old_rules)


def _x(n=4096) -> torch.Tensor:
    return planted(n, d_in=16, n_true=40, per_token=3)[0] + 0.2


@pytest.mark.parametrize("cfg", CFGS, ids=[c.label for c in CFGS])
def test_a_training_step_under_the_gpu_rules_has_no_data_dependent_op(cfg, gpu_rules):
    tcfg = TrainerConfig(total_tokens=256 * 20, batch_size=256, warmup_steps=0, dead_tokens=256, seed=1,
                         device="cpu")
    run = TrainingRun(cfg, tcfg, torch.device("cpu"), None, None, {})
    x = _x()
    run.init(x[:1024], x[:1024])
    for step in range(3):  # real steps first: the threshold is set, latents die, AuxK is on
        run.step(step, x[step * 256:(step + 1) * 256])
    run.flush()
    assert len(run.history) == 3 and run.sae.training
    watch = FiniteWatch(torch.device("cpu"))
    assert watch.lazy
    # Adam is left out: its step counter is a CPU tensor on purpose (torch's Adam keeps it on the
    # host unless capturable, so reading it costs a GPU nothing), which a fake mode cannot tell
    with FakeTensorMode(allow_non_fake_inputs=True), mock.patch.object(run.opt, "step") as adam:
        batch = x[1024:1280] * 1.0
        watch.check(batch, 3)
        run.step(3, batch)  # raises DataDependentOutputException / DynamicOutputShapeException on a host read
    assert adam.call_count == 1
    assert len(run.pending) == 1  # the step's numbers wait for the next flush


def test_the_fake_mode_does_refuse_host_reads():
    """The check above can fail: the CPU's fast kernels (``nonzero``) and a plain ``.item()`` do."""
    from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException

    tcfg = TrainerConfig(total_tokens=256 * 20, batch_size=256, warmup_steps=0, seed=1, device="cpu")
    run = TrainingRun(CFGS[1], tcfg, torch.device("cpu"), None, None, {})
    x = _x()
    run.init(x[:1024], x[:1024])
    run.step(0, x[:256])
    old = kernels.set_kernels("fast")
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), mock.patch.object(run.opt, "step"), \
                pytest.raises((DataDependentOutputException,
                                                                        DynamicOutputShapeException)):
            run.step(1, x[256:512] * 1.0)
    finally:
        kernels.set_kernels(old)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "sampled"])
def test_the_gpu_rules_train_what_the_cpu_rules_train(arch, gpu_rules):
    """Deferred numbers and tensor-only updates change nothing but when the log is read: the
    plain kernels under the GPU's rules reach the plain kernels' weights and log."""
    cfg = SAEConfig(arch=arch, d_in=16, d_sae=128, k=4, l=2.0, dtype="float64")
    tcfg = TrainerConfig(total_tokens=256 * 16, batch_size=256, warmup_steps=0, dead_tokens=512, seed=2,
                         device="cpu", sync_every=5)
    x = _x().double()
    deferred = train_sae(batch_source(x, 256), cfg, tcfg)
    kernels.emulate_gpu_host_rules(False)
    kernels.set_kernels("plain")
    plain = train_sae(batch_source(x, 256), cfg, tcfg)
    for name, v in plain.sae.state_dict().items():
        torch.testing.assert_close(deferred.sae.state_dict()[name], v, msg=name)
    assert [h.step for h in deferred.history] == list(range(1, 17))
    for a, b in zip(deferred.history, plain.history):
        assert a.loss == pytest.approx(b.loss) and a.aux == pytest.approx(b.aux) and a.l0 == pytest.approx(b.l0)
    if arch != "sampled":  # (its pool keeps its latents alive over 16 steps)
        assert any(h.aux > 0 for h in plain.history)  # the deferred AuxK path was compared too


def test_nan_in_a_batch_is_raised_at_the_next_read_under_the_gpu_rules(gpu_rules):
    from sae_core.errors import ActivationFileError

    x = _x()
    x[256 * 6 + 3, 2] = float("nan")  # batch 6 of an unshuffled source
    source = lambda seed: (x[i:i + 256] for i in range(0, x.shape[0] - 255, 256))  # noqa: E731
    seen = []
    tcfg = TrainerConfig(total_tokens=256 * 12, batch_size=256, warmup_steps=0, seed=0, device="cpu",
                         decoder_init="random")
    with pytest.raises(ActivationFileError, match="training batch 6 contains NaN"):
        train_sae(source, SAEConfig(arch="topk", d_in=16, d_sae=64, k=4), tcfg, on_step=lambda h, n: seen.append(h))
    assert len(seen) == 6  # steps 1-6 were logged; the bad batch's step never was


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "sampled"])
def test_bf16_autocast_trains_close_to_float32(arch):
    cfg = SAEConfig(arch=arch, d_in=16, d_sae=128, k=4, l=2.0)
    base = TrainerConfig(total_tokens=256 * 30, batch_size=256, lr=3e-3, warmup_steps=0, dead_tokens=1024,
                         seed=3, device="cpu")
    x = _x(8192)
    fp32 = train_sae(batch_source(x, 256), cfg, base)
    from dataclasses import replace

    bf16 = train_sae(batch_source(x, 256), cfg, replace(base, autocast="bf16"))
    assert bf16.sae.W_enc.dtype == torch.float32  # weights and Adam stay float32
    held = x[-1024:]
    fvu = {}
    for name, r in (("fp32", fp32), ("bf16", bf16)):
        with torch.no_grad():
            x_hat = r.sae(held).x_hat
        fvu[name] = ((held - x_hat).pow(2).sum() / (held - held.mean(0)).pow(2).sum()).item()
    assert fvu["bf16"] < 0.9  # it learned (30 steps)
    assert fvu["bf16"] == pytest.approx(fvu["fp32"], abs=0.1), fvu
    # the training curve follows float32's (2.81 against 2.79 for TopK after 30 steps here)
    assert bf16.history[-1].sq_err < 0.9 * bf16.history[0].sq_err
    assert bf16.history[-1].sq_err == pytest.approx(fp32.history[-1].sq_err, rel=0.03)


def test_autocast_names_a_choice():
    from sae_core.errors import SAECoreError

    with pytest.raises(SAECoreError, match="autocast='fp8'; choose 'bf16'"):
        TrainerConfig(total_tokens=1000, batch_size=100, autocast="fp8")


def test_bf16_autocast_harvest_is_close_to_float32(tiny_a, tmp_path):
    from sae_core.activations.harvest import harvest_activations

    texts = ["1 2 3 4 5 6 7", "one two three four", "January February March"] * 10
    hook = "blocks.1.hook_resid_post"
    fp32 = harvest_activations(tiny_a, hook, texts, tmp_path / "a", model_name="zoo:tiny-a").read_all()
    bf16 = harvest_activations(tiny_a, hook, texts, tmp_path / "b", model_name="zoo:tiny-a",
                               autocast="bf16").read_all()
    assert bf16.shape == fp32.shape and bf16.dtype == torch.float32
    rel = ((bf16 - fp32).norm() / fp32.norm()).item()
    assert 0 < rel < 0.02  # bfloat16 rounding (0.4% here), not another computation
