"""One SAE under training (``TrainingRun``) and its step: AuxK, the learning-rate schedule, the
NaN watch and device transfers. ``loop`` drives the runs; its module doc has the choices and
the GPU path (no host reads in the step on CUDA)."""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from sae_core.errors import ActivationFileError
from sae_core import distributed
from sae_core.sae import kernels
from sae_core.sae.base import SAE
from sae_core.sae.output import ForwardOutput
from sae_core.training.checkpoint import TrainState, load_latest_checkpoint, save_checkpoint
from sae_core.sae.config import SAEConfig
from sae_core.distributed import DataParallel
from sae_core.training.initialization import (calibrate_inference, fit_encoder_scale, fold_scale, geometric_median,
                                         init_decoder_from_data)
from sae_core.sae.registry import create_sae
from sae_core.training.config import StepLog, TrainerConfig, TrainResult

log = logging.getLogger(__name__)


def aux_k_loss(sae: SAE, x_ND, out: ForwardOutput, dead_S, rows_R=None, lazy: bool = False) -> torch.Tensor:
    """AuxK: dead latents' top pre-activations reconstruct the detached residual (no b_dec),
    on the tokens ``rows_R`` of the batch (all when None). Data-parallel: this rank's share of
    the global AuxK loss (its rows' error over the global rows' count and residual variance), so
    the ranks' shares sum to the loss of one process on the global batch.

    ``lazy`` (GPU path): no host read of how many latents are dead; k_aux is d_in/2 and picks
    that fall on live latents are -inf, so they decode to nothing (the plain kernels' selection),
    and the loss is 0 when none is dead."""
    if lazy:
        k_aux = min(sae.cfg.d_in // 2, sae.cfg.d_sae)
    else:
        n_dead = int(dead_S.sum())
        if n_dead == 0:
            return x_ND.new_zeros(())
        k_aux = min(sae.cfg.d_in // 2, n_dead)
    resid_ND = (x_ND - out.x_hat).detach()
    if rows_R is not None:
        resid_ND = resid_ND.index_select(0, rows_R)
    if distributed.active() is not None:
        aux = _aux_share(sae, x_ND, out, dead_S, k_aux, rows_R, resid_ND)
    else:
        aux_hat_ND = kernels.aux_decode(sae, x_ND, out, dead_S, k_aux, rows_R)  # sparse when out is
        denom = (resid_ND - resid_ND.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
        aux = (aux_hat_ND - resid_ND).pow(2).sum(-1).mean() / denom
    return aux * dead_S.any() if lazy else aux


def _aux_share(sae, x_ND, out, dead_S, k_aux, rows_R, resid_ND) -> torch.Tensor:
    """``aux_k_loss``'s data-parallel form: the global rows' count, mean and variance of the
    residual from one all-reduce of [sum of rows, sum of squares, count]."""
    R_local = resid_ND.shape[0]
    stats = distributed.all_sum_(torch.cat([resid_ND.sum(0), resid_ND.pow(2).sum().reshape(1),
                                            resid_ND.new_tensor([R_local])]))
    n = stats[-1]
    mean_D = stats[:-2] / n
    denom = ((stats[-2] - n * mean_D.dot(mean_D)) / n).clamp_min(1e-12)
    if R_local == 0:
        return x_ND.new_zeros(())
    aux_hat_ND = kernels.aux_decode(sae, x_ND, out, dead_S, k_aux, rows_R)
    return (aux_hat_ND - resid_ND).pow(2).sum() / n / denom

def _wide(t: torch.Tensor) -> torch.Tensor:
    """Half-precision results (autocast) in float32 for the loss; anything else as it is."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def check_finite(x_ND: torch.Tensor, step: int) -> None:
    if not torch.isfinite(x_ND).all():
        bad = (~torch.isfinite(x_ND)).any(1).nonzero()[0].item()
        raise ActivationFileError(f"training batch {step} contains NaN or Inf (first bad row {bad} "
                                  "of the batch); clean the activations before training")


class FiniteWatch:
    """NaN or Inf in the training batches: checked at once on the CPU; on CUDA the first bad step
    is recorded on the device and raised at the next ``flush`` (before any checkpoint is written),
    so the check never makes the GPU wait."""

    def __init__(self, device: torch.device):
        self.lazy = kernels.defer_host_reads(torch.empty(0, device=device))
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device) if self.lazy else None

    def check(self, x_ND: torch.Tensor, step: int) -> None:
        if not self.lazy:
            return check_finite(x_ND, step)
        bad = ~torch.isfinite(x_ND).all()
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)

    def raise_if_bad(self) -> None:
        if self.lazy and (step := int(self.first_bad)) >= 0:
            raise ActivationFileError(f"training batch {step} contains NaN or Inf; clean the activations "
                                      "before training")


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device``; a CPU tensor bound for CUDA goes through pinned memory without
    blocking, so the copy overlaps the GPU's work on the previous step."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def _aux_rows(n: int, fraction: float, device, generator: torch.Generator,
              dp: DataParallel | None = None) -> torch.Tensor | None:
    """A random ``fraction`` of a batch's rows, ascending (memory order), for AuxK; None = all.
    Data-parallel: drawn over the global batch (``n`` rows per rank), this rank's part of them."""
    world = dp.world if dp else 1
    r = max(1, round(n * world * fraction))
    if r >= n * world:
        return None
    # drawn on the run's CPU generator, whose state the checkpoints keep (resume stays exact on CUDA)
    rows_R = torch.randperm(n * world, generator=generator)[:r].sort().values
    if dp:
        rows_R = rows_R[(rows_R >= dp.rank * n) & (rows_R < (dp.rank + 1) * n)] - dp.rank * n
    return to_device(rows_R, device)


def lr_at(step: int, tcfg: TrainerConfig, base: float) -> float:
    if step < tcfg.warmup_steps:
        return base * (step + 1) / tcfg.warmup_steps
    decay_start = int(tcfg.steps * (1 - tcfg.decay_fraction))
    if step >= decay_start:
        return base * max(0.0, (tcfg.steps - step) / max(1, tcfg.steps - decay_start))
    return base


class TrainingRun:
    """One SAE under training: weights, Adam, its own RNG, dead counters, log and checkpoints.

    The RNG is a CPU generator seeded with the trainer's seed; it draws the initial weights, the
    data rows of the decoder init, AuxK's rows and the Sampled-SAE's sampled pools, and the
    checkpoints keep its state. So a run depends on its own configuration and the batches alone:
    the same whether it trains alone or beside others (``train_many``), on any device.
    """

    def __init__(self, cfg: SAEConfig, tcfg: TrainerConfig, device: torch.device,
                 ckpt_dir: Path | None, on_step: Callable[[StepLog, int], None] | None,
                 buffers: dict[tuple, torch.Tensor], dp: DataParallel | None = None):
        self.cfg, self.tcfg, self.device, self.dp = cfg, tcfg, device, dp
        self.ckpt_dir, self.on_step = ckpt_dir, on_step
        self.gen = torch.Generator().manual_seed(tcfg.seed)
        with torch.random.fork_rng(devices=[]):  # creation draws from the global RNG: leave it as it was
            self.sae = create_sae(cfg)
        self.sae.reset_parameters(self.gen)
        self.sae.to(device)
        if hasattr(self.sae, "pool_generator"):
            self.sae.pool_generator = self.gen
        self.lr = tcfg.lr_for(cfg.d_sae)
        # fused: one pass per parameter instead of a dozen elementwise ops (at d_in 768, d_sae
        # 24576 on the 2-core CPU: 20 ms a step against 139 ms, issue #30); the same update
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=self.lr, betas=(0.9, 0.999),
                                    fused=device.type in ("cpu", "cuda") or None)
        self.config_key = {"sae": cfg.to_json(), "trainer": asdict(tcfg)}
        self.since_fired_S = torch.zeros(cfg.d_sae, device=device)
        self.history: list[StepLog] = []
        self.pending: list[tuple] = []  # steps whose numbers the host has not read yet (GPU)
        # one pre-activation buffer for every step of the sparse kernels (see kernels.sae_forward:
        # fresh ones cost page faults), shared by the runs of a group that have its shape (a step
        # reads it only while it runs); dense rules keep pre in the autograd graph instead
        self.pre_buf = None
        if self.sae.sparse_rule:
            key = (cfg.d_sae, self.sae.W_enc.dtype)
            if key not in buffers:
                rows = tcfg.batch_size // (dp.world if dp else 1)
                buffers[key] = torch.empty(rows, cfg.d_sae, device=device, dtype=key[1])
            self.pre_buf = buffers[key]

    def checkpoint(self, at_most: int | None = None) -> TrainState | None:
        return load_latest_checkpoint(self.ckpt_dir, self.config_key, at_most) if self.ckpt_dir else None

    def load(self, st: TrainState) -> None:
        self.sae.load_state_dict(st.sae_state)
        self.opt.load_state_dict(st.opt_state)
        self.gen.set_state(st.rng_state)
        self.since_fired_S = st.tokens_since_fired.to(self.device)

    @torch.no_grad()
    def init(self, sample_ND: torch.Tensor, init_rows_ND: torch.Tensor | None) -> None:
        """b_dec, the decoder directions (from ``init_rows`` when given) and the encoder's scale,
        from scaled activations."""
        self.sae.b_dec.copy_(geometric_median(sample_ND))
        if init_rows_ND is not None:
            init_decoder_from_data(self.sae, init_rows_ND, generator=self.gen)
        enc_scale = fit_encoder_scale(self.sae, sample_ND)
        log.info("initial encoder scale %.3g (least-squares fit on the first batch)", enc_scale)

    def step(self, step: int, x_ND: torch.Tensor) -> None:
        """One training step on the scaled batch ``x_ND`` (data-parallel: this rank's part of the
        global batch; see ``distributed``). On CUDA nothing is read on the host (``lazy``): the
        step's numbers wait in ``pending`` until ``flush``."""
        sae, tcfg, dp = self.sae, self.tcfg, self.dp
        share = 1.0 / dp.world if dp else 1.0  # this rank's fraction of the global batch
        lazy = kernels.defer_host_reads(x_ND)
        sae.train()
        # dictionary_learning's threshold: its EMA moves only from ``threshold_start`` on
        sae.threshold_updates = tcfg.threshold != "ema" or step > tcfg.threshold_start
        for group in self.opt.param_groups:
            group["lr"] = lr_at(step, tcfg, self.lr)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=tcfg.autocast == "bf16"):
            # the pre-activation buffer is float32: under autocast the encoder writes bfloat16
            out = sae(x_ND, None if tcfg.autocast else self.pre_buf)
            mse = (_wide(out.x_hat) - x_ND).pow(2).sum(-1).mean()
            extra = sae.extra_loss(out)
            eligible_S = sae.aux_eligible()
            dead_S = self.since_fired_S >= tcfg.dead_window
            if eligible_S is not None:
                dead_S &= eligible_S
            uses_aux = self.cfg.arch != "relu" and tcfg.aux_k_coeff != 0
            # drawn at every step, dead latents or not, so the run's RNG advances alike whether or
            # not the host looks at the dead count (the GPU path never does)
            rows_R = _aux_rows(x_ND.shape[0], tcfg.aux_fraction, self.device, self.gen, dp) if uses_aux else None
            if not uses_aux or (not lazy and not bool(dead_S.any())):
                aux = mse.new_zeros(())
            else:  # data-parallel: this rank's share
                aux = _wide(aux_k_loss(sae, x_ND, out, dead_S, rows_R, lazy=lazy))
        loss = share * (mse + (_wide(extra) if extra is not None else 0.0)) + tcfg.aux_k_coeff * aux
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        distributed.sum_grads_(sae.parameters())
        sae.remove_parallel_grads()
        if tcfg.grad_clip is not None:  # dictionary_learning's order: parallel part removed, then clipped
            torch.nn.utils.clip_grad_norm_(sae.parameters(), tcfg.grad_clip)
        self.opt.step()
        sae.normalize_decoder()
        n_rows = x_ND.shape[0] * (dp.world if dp else 1)
        with torch.no_grad():
            if eligible_S is None:
                self.since_fired_S += n_rows
            else:  # a latent's clock runs only while the rule could fire it
                self.since_fired_S.add_(eligible_S, alpha=n_rows)
            fired_S = out.fired()
            if dp:
                fired_S = distributed.all_max_(fired_S.to(torch.uint8)).bool()
            self.since_fired_S.masked_fill_(fired_S, 0)
            l0 = out.l0() if out.codes is not None or not lazy else (out.z != 0).sum(-1).float().mean()
            # the step's numbers in one tensor (data-parallel: summed over the ranks first)
            stats = torch.stack([loss.detach(), share * mse.detach(), aux.detach(), mse.new_tensor(share) * l0])
            stats = torch.cat([distributed.all_sum_(stats), dead_S.to(stats.dtype).mean().reshape(1)])
        self.pending.append((step, stats, self.opt.param_groups[0]["lr"], sae.pool_churn))
        if not lazy:
            self.flush()

    def flush(self) -> None:
        """Turn the pending steps' numbers into ``StepLog`` entries (one host read for all of them)
        and call ``on_step`` for each, in order."""
        if not self.pending:
            return
        values = torch.stack([p[1] for p in self.pending]).tolist()
        pending, self.pending = self.pending, []
        for (step, _, lr, churn), (loss_v, mse_v, aux_v, l0_v, dead_v) in zip(pending, values):
            entry = StepLog(step + 1, (step + 1) * self.tcfg.batch_size, loss_v, mse_v, aux_v, l0_v, dead_v, lr,
                            self.tcfg.aux_k_coeff * aux_v / loss_v if loss_v > 0 else 0.0,
                            float(churn) if churn is not None else None)
            self.history.append(entry)
            if self.on_step:
                self.on_step(entry, self.tcfg.steps)

    def save(self, step: int, scale: float) -> None:
        if self.ckpt_dir and (self.dp is None or self.dp.is_main):  # every rank holds the same state
            save_checkpoint(self.ckpt_dir, TrainState(step, step * self.tcfg.batch_size, self.sae.state_dict(),
                                                      self.opt.state_dict(), self.since_fired_S,
                                                      self.gen.get_state(), scale), self.config_key)

    def finish(self, calib_ND: list[torch.Tensor], scale: float) -> TrainResult:
        self.sae.eval()
        calibrate_inference(self.sae, calib_ND, threshold=self.tcfg.threshold == "calibrated")
        fold_scale(self.sae, scale)
        if hasattr(self.sae, "pool_generator"):
            self.sae.pool_generator = None  # the trained SAE does not hold on to the trainer's RNG
        return TrainResult(self.sae, self.history, scale)
