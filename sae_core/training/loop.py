"""Architecture-agnostic SAE trainer.

One step: forward, loss = MSE + the architecture's extra loss + AuxK, backward, remove the
gradient parallel to each decoder row, Adam step, renormalise decoder rows, update dead counters.

Choices and their sources:
- Input scaling: activations are multiplied by s = sqrt(d_in) / E||x|| (estimated on the first
  batches) so one learning rate fits every model; ``fold_scale`` moves s into the weights at save,
  so the saved SAE reads raw activations.
- Init: unit-norm decoder rows pointing at random centred data rows (``decoder_init="data"``,
  ``init_decoder_from_data``; "random" gives Gaussian directions), W_enc = c W_dec^T, b_dec at the
  geometric median of a sample (Weiszfeld iterations). Data rows: after 400 steps on the small
  benchmark size (zoo activations, L0 32; ``bench/sae_trainer_variants.py``), BatchTopK reached
  held-out FVU 0.0180 from random rows and 0.0108 from data rows (TopK: 0.0103 -> 0.0075). The
  scalar c is fitted on the first batch (``fit_encoder_scale``): with
  c = 1 the initial reconstruction overshoots badly (FVU ~2 on zoo activations) and short runs
  never recover (issue #3: BatchTopK FVU 1.28 after 23 steps against sparsify's 0.14, whose
  encoder starts at ~0.58 of the decoder's norm; SAELens starts both at norm 0.1).
- AuxK (Gao et al. 2024, appendix A.2): latents that have not fired for ``dead_window`` tokens
  (counted only while the SAE's rule could fire them, ``SAE.aux_eligible``: the Sampled-SAE's
  pool, issue #11) reconstruct the detached residual with their top ``k_aux`` (= d_in/2) pre-activations, decoded
  without b_dec; the loss is normalised by the residual's variance, weight 1/32. The window is
  ``dead_tokens``, by default 1/16 of the run capped at 1M tokens (a fixed 1M window: FVU 0.0133
  instead of 0.0108 in the run above). AuxK reads a random quarter of each batch's tokens
  (``aux_fraction``): on every token the same run took 49% longer for FVU 0.0107.
- Adam, lr = 2e-4 / sqrt(d_sae / 2^14) unless given; linear warmup; linear decay to 0 over the
  last ``decay_fraction`` of steps.
- Against dictionary_learning's BatchTopK trainer (``trainers/batch_top_k.py``,
  ``BatchTopKTrainer.update``), the reference implementation of the BatchTopK paper:
  - gradient clipping: it clips the gradient's global norm to 1.0 after removing the part
    parallel to the decoder rows; ``grad_clip`` does the same, and 1.0 is the default because it
    measured better: at the demo's sizes (zoo:tiny-a layer 1, d_sae 512, k 16, batch 1024, 976
    steps, the trainer's schedule; ``bench/sae_trainer_variants.py``) held-out FVU fell from
    0.0149 to 0.0093 (BatchTopK), 0.0118 to 0.0086 (TopK), 0.0451 to 0.0337 (Sampled, entropy,
    l=4) and 0.0212 to 0.0137 (Sampled, L2, l=16). ``grad_clip=None`` trains as before (SAEs
    trained so keep their names);
  - the inference threshold: it keeps an EMA (beta 0.999) of the smallest kept activation from
    step 1000 on and uses it as it is; here the threshold is calibrated at the final weights
    (``calibrate_inference``), and ``threshold="ema"`` with ``threshold_momentum=0.999`` and
    ``threshold_start`` is its rule (a run must be longer than ``threshold_start`` steps).

GPU path (issue #15): on CUDA a step reads nothing on the host, so the GPU never waits for it:
the step's numbers stay on the device and are read every ``sync_every`` steps (64 by default, and
at each checkpoint and the end), one read for all of them, before ``on_step`` sees them; NaN in a
batch is recorded on the device and raised at that read; AuxK does not ask how many latents are
dead; the BatchTopK threshold updates with tensor ops; CPU tensors (batches, AuxK's rows) reach the
GPU through pinned memory without blocking; and the kernels are the fixed-size plain ones
(``kernels``: "auto"). ``tests/training/test_sync_free.py`` runs the step under a fake-tensor mode that
refuses every data-dependent op (the ops that synchronise on a GPU); ``tests/test_device.py``
checks it on a GPU with ``torch.cuda.set_sync_debug_mode``. Not sync-free: ``pool_rule="sample"``
(its draw runs on the run's CPU generator) and data-parallel runs (the global cut's candidates).
``autocast="bf16"``: forward and loss under bfloat16 autocast (weights and Adam in float32).

``train_sae`` trains one SAE; ``train_many`` trains several in lockstep on one stream of batches
(the l-sweep), each exactly as it would train alone: every run draws from its own seeded CPU
generator (``TrainingRun``), never from torch's global RNG.

Where things are: ``config`` (``TrainerConfig``, ``StepLog``, ``TrainResult``, also
importable from here), ``initialization`` (init, calibration, scale folding), ``step`` (one SAE
under training: its step, AuxK, checkpoints), this module (the batch stream, resume, lockstep).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import torch

from sae_core.errors import SAECoreError
from sae_core.io import TORCH_DTYPES
from sae_core import distributed
from sae_core.training.checkpoint import TrainState
from sae_core.sae.config import SAEConfig
from sae_core.distributed import DataParallel
from sae_core.training.initialization import estimate_scale
from sae_core.training.step import FiniteWatch, TrainingRun, check_finite, to_device
from sae_core.training.config import BatchSource, StepLog, TrainerConfig, TrainResult

__all__ = ["BatchSource", "StepLog", "TrainResult", "TrainerConfig", "device_for", "run_bytes",
           "train_many", "train_sae"]

CALIBRATION_BATCHES = 16
INIT_LOOKAHEAD_BATCHES = 7  # decoder_init="data" draws from at most 1 + this many batches


def _endless(batches: BatchSource, seed: int, skip: int = 0) -> Iterator[torch.Tensor]:
    """Batches forever, from the ``skip``-th on: epoch e is ``batches(seed + e)`` (a new shuffle
    each epoch). A source with ``per_epoch`` skips by arithmetic; any other is read and dropped."""
    per_epoch = getattr(batches, "per_epoch", None)
    if per_epoch == 0:
        raise SAECoreError("the activation source has fewer rows than one batch; harvest more "
                           "tokens or lower the batch size")
    epoch, start = divmod(skip, per_epoch) if per_epoch else (0, 0)
    drop = 0 if per_epoch else skip
    while True:
        empty = True
        for x in (batches(seed + epoch, start) if per_epoch else batches(seed + epoch)):
            empty = False
            if drop:
                drop -= 1
                continue
            yield x
        if empty and not start:
            raise SAECoreError("the activation source yielded no batches; is the store empty?")
        epoch, start = epoch + 1, 0


def run_bytes(cfg: SAEConfig, tcfg: TrainerConfig, with_buffer: bool = True) -> int:
    """Memory one run holds between its steps in a lockstep group: W_enc and W_dec with their
    gradients and two Adam moments (8 matrices of d_in x d_sae) and, ``with_buffer``, the
    pre-activation buffer (batch x d_sae), which runs of one shape share. A step's temporaries
    come and go, one run at a time."""
    item = TORCH_DTYPES[cfg.dtype].itemsize
    return item * cfg.d_sae * (8 * cfg.d_in + (tcfg.batch_size if with_buffer else 0))


def device_for(tcfg: TrainerConfig) -> torch.device:
    return torch.device(tcfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _resume_states(runs: list[TrainingRun]) -> list[TrainState | None]:
    """Each run's checkpoint at the newest step that every run has (all None: start afresh).
    Runs in lockstep save at the same steps, two kept each, so a crash between two runs' saves
    leaves the older step for all."""
    states = [run.checkpoint() for run in runs]
    while len({st.step if st else 0 for st in states}) > 1:
        low = min(st.step if st else 0 for st in states)
        states = [st if (st.step if st else 0) == low else run.checkpoint(at_most=low)
                  for run, st in zip(runs, states)]
    return states if states[0] is not None else [None] * len(runs)


def train_sae(batches: BatchSource, cfg: SAEConfig, tcfg: TrainerConfig, *,
              ckpt_dir: Path | None = None,
              on_step: Callable[[StepLog, int], None] | None = None,
              dp: DataParallel | None = None) -> TrainResult:
    """Train an SAE of ``cfg`` on ``batches(seed)`` (raw activations ``[B, d_in]``).

    Resumes from ``ckpt_dir`` when it holds a checkpoint of the same configuration.
    ``on_step(log, total_steps)`` is called after every step. The returned SAE reads raw
    activations (the input scale is folded in) and is in eval mode.
    """
    return train_many(batches, [cfg], tcfg, ckpt_dirs=[ckpt_dir], on_steps=[on_step], dp=dp)[0]


def train_many(batches: BatchSource, cfgs: list[SAEConfig], tcfg: TrainerConfig, *,
               ckpt_dirs: list[Path | None] | None = None,
               on_steps: list[Callable[[StepLog, int], None] | None] | None = None,
               dp: DataParallel | None = None) -> list[TrainResult]:
    """Train one SAE per configuration in lockstep on one stream of batches: each batch is read
    (and moved to the device) once and every SAE takes a step on it. Each SAE ends exactly as
    ``train_sae`` would have trained it alone (its own RNG, ``TrainingRun``). ``ckpt_dirs`` and
    ``on_steps``: one per configuration (or None); a crashed group resumes at the newest step all
    its checkpoints share.

    ``dp``: data-parallel (``distributed``): ``batches`` yields this rank's parts of the global
    batches (``batch_size / world`` rows each); the ranks take identical steps on the global
    batch, only rank 0 writes checkpoints, and every rank returns the same SAE."""
    if not cfgs:
        return []
    ckpt_dirs = ckpt_dirs or [None] * len(cfgs)
    on_steps = on_steps or [None] * len(cfgs)
    if len({c.d_in for c in cfgs}) > 1 or len(ckpt_dirs) != len(cfgs) or len(on_steps) != len(cfgs):
        raise SAECoreError("train_many needs SAEs of one d_in, with one checkpoint directory and one "
                           "callback (or None) per configuration")
    device = dp.device if dp else device_for(tcfg)
    if dp and tcfg.batch_size % dp.world:
        raise SAECoreError(f"batch_size={tcfg.batch_size} cannot be split evenly over {dp.world} ranks; "
                           f"use a multiple of {dp.world}")
    d_in = cfgs[0].d_in
    buffers: dict[tuple, torch.Tensor] = {}
    runs = [TrainingRun(cfg, tcfg, device, ckpt, cb, buffers, dp) for cfg, ckpt, cb in zip(cfgs, ckpt_dirs, on_steps)]
    states = _resume_states(runs)
    start = states[0].step if states[0] is not None else 0
    # the batch stream is a pure function of the seed: a resumed run skips what it used
    data = _endless(batches, tcfg.seed, skip=start)
    ahead: list[torch.Tensor] = []  # batches read early (for the init), trained on first

    def next_batch() -> torch.Tensor:
        return to_device(ahead.pop(0) if ahead else next(data), device)
    local_first_ND = next_batch()
    if dp and local_first_ND.shape[0] * dp.world != tcfg.batch_size:
        raise SAECoreError(f"rank {dp.rank} got a batch of {local_first_ND.shape[0]} rows; with {dp.world} ranks "
                           f"each part of a {tcfg.batch_size}-row batch has {tcfg.batch_size // dp.world}")
    first_ND = distributed.gather_rows(local_first_ND, dp)  # the global batch: the init reads it
    if first_ND.shape[1] != d_in:
        raise SAECoreError(f"width mismatch: the activations have d={first_ND.shape[1]} but the SAE "
                           f"expects d_in={d_in}; set d_in to the hook's width")
    check_finite(first_ND, start)

    if start:
        for run, st in zip(runs, states):
            run.load(st)
        scale = states[0].scale
    else:
        scale = estimate_scale(first_ND)
        sample_ND = first_ND[:4096] * scale
        # decoder_init="data" wants enough distinct rows for every latent (else rows drawn twice
        # start as near-twins): look ahead a few batches; they are trained on next, in their order
        n_ahead = [min(INIT_LOOKAHEAD_BATCHES, -(-c.d_sae // first_ND.shape[0]) - 1) for c in cfgs]
        while tcfg.decoder_init == "data" and len(ahead) < max(n_ahead):
            ahead.append(next(data))
            check_finite(ahead[-1], len(ahead))
        for run, n in zip(runs, n_ahead):
            rows_ND = (torch.cat([first_ND] + [distributed.gather_rows(b.to(device), dp) for b in ahead[:n]])
                       * scale if tcfg.decoder_init == "data" else None)
            run.init(sample_ND, rows_ND)
            del rows_ND

    del first_ND
    x_ND = local_first_ND
    watch, every = FiniteWatch(device), tcfg.sync_interval(device)
    with distributed.collective(dp):  # data-parallel: the SAE rules reduce over the ranks from here
        for step in range(start, tcfg.steps):
            if step > start:
                x_ND = next_batch()
                watch.check(x_ND, step)
            x_ND = x_ND * scale
            for run in runs:
                run.step(step, x_ND)
            save = tcfg.checkpoint_every and (step + 1) % tcfg.checkpoint_every == 0 and step + 1 < tcfg.steps
            if save or (step + 1) % every == 0 or step + 1 == tcfg.steps:  # the host reads the log
                watch.raise_if_bad()
                for run in runs:
                    run.flush()
            if save:
                for run in runs:
                    run.save(step + 1, scale)
        calib_ND = [next_batch() * scale for _ in range(CALIBRATION_BATCHES)]
        return [run.finish(calib_ND, scale) for run in runs]
