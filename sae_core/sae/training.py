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

GPU path (issue #15): on CUDA a step reads nothing on the host, so the GPU never waits for it:
the step's numbers stay on the device and are read every ``sync_every`` steps (64 by default, and
at each checkpoint and the end), one read for all of them, before ``on_step`` sees them; NaN in a
batch is recorded on the device and raised at that read; AuxK does not ask how many latents are
dead; the BatchTopK threshold updates with tensor ops; CPU tensors (batches, AuxK's rows) reach the
GPU through pinned memory without blocking; and the kernels are the fixed-size plain ones
(``kernels``: "auto"). ``tests/test_sync_free.py`` runs the step under a fake-tensor mode that
refuses every data-dependent op (the ops that synchronise on a GPU); ``tests/test_device.py``
checks it on a GPU with ``torch.cuda.set_sync_debug_mode``. Not sync-free: ``pool_rule="sample"``
(its draw runs on the run's CPU generator) and data-parallel runs (the global cut's candidates).
``autocast="bf16"``: forward and loss under bfloat16 autocast (weights and Adam in float32).

``train_sae`` trains one SAE; ``train_many`` trains several in lockstep on one stream of batches
(the l-sweep), each exactly as it would train alone: every run draws from its own seeded CPU
generator (``_Run``), never from torch's global RNG.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import torch

from sae_core.errors import ActivationFileError, SAECoreError
from sae_core.io import TORCH_DTYPES
from sae_core.sae import distributed, kernels
from sae_core.sae.base import SAE, ForwardOutput
from sae_core.sae.batchtopk import min_kept
from sae_core.sae.checkpoint import TrainState, load_latest_checkpoint, save_checkpoint
from sae_core.sae.config import SAEConfig
from sae_core.sae.distributed import DataParallel
from sae_core.sae.registry import create_sae

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerConfig:
    total_tokens: int                 # tokens to train on (steps = total_tokens // batch_size)
    batch_size: int = 4096
    lr: float | None = None           # default 2e-4 / sqrt(d_sae / 2^14)
    warmup_steps: int = 50
    decay_fraction: float = 0.2
    aux_k_coeff: float = 1 / 32
    dead_tokens: int | None = None    # a latent silent this long is "dead" for AuxK (None: auto)
    decoder_init: str = "data"        # "data": directions of data rows, or "random" unit rows
    aux_fraction: float = 0.25        # AuxK reads this fraction of each batch's tokens (random)
    seed: int = 0
    checkpoint_every: int = 0         # steps; 0 = no checkpoints
    device: str | None = None
    autocast: str | None = None       # "bf16": the SAE's forward and loss under bfloat16 autocast
    sync_every: int | None = None     # steps between host reads of the log (None: 1 on CPU, 64 on CUDA)

    def __post_init__(self):
        if self.total_tokens < self.batch_size:
            raise SAECoreError(f"total_tokens={self.total_tokens} is less than one batch "
                               f"({self.batch_size}); train on more tokens or use a smaller batch")
        if self.decoder_init not in ("random", "data"):
            raise SAECoreError(f"decoder_init={self.decoder_init!r}; choose 'random' or 'data'")
        if not 0 < self.aux_fraction <= 1:
            raise SAECoreError(f"aux_fraction={self.aux_fraction} must be in (0, 1]")
        if self.batch_size <= 0:
            raise SAECoreError(f"batch_size must be positive (got {self.batch_size})")
        if self.autocast not in (None, "bf16"):
            raise SAECoreError(f"autocast={self.autocast!r}; choose 'bf16' or leave it unset (float32)")
        if self.sync_every is not None and self.sync_every < 1:
            raise SAECoreError(f"sync_every={self.sync_every} must be at least 1 (steps between host reads)")
        if self.device is not None:
            try:
                dev = torch.device(self.device)
            except (RuntimeError, ValueError):
                raise SAECoreError(f"device {self.device!r} is not a torch device; use cpu, cuda or "
                                   "cuda:N") from None
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise SAECoreError(f"device {self.device!r} asked for, but this machine has no CUDA "
                                   "device torch can use; use cpu (or leave the device unset)")
            if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
                raise SAECoreError(f"device {self.device!r} asked for, but this machine has "
                                   f"{torch.cuda.device_count()} CUDA device(s)")

    @property
    def steps(self) -> int:
        return self.total_tokens // self.batch_size

    @property
    def dead_window(self) -> int:
        """``dead_tokens``, or by default 1/16 of the run capped at 1M tokens (at least a batch):
        a fixed 1M-token window never fires in short runs, whose dead latents then stay dead."""
        if self.dead_tokens is not None:
            return self.dead_tokens
        return max(self.batch_size, min(1_000_000, self.total_tokens // 16))

    def sync_interval(self, device: torch.device) -> int:
        """Steps between the host's reads of the training log (``GPU path`` in the module doc)."""
        return self.sync_every or (64 if device.type == "cuda" else 1)

    def lr_for(self, d_sae: int) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(d_sae / 2**14)


class StepLog(NamedTuple):
    """One training step. Losses are on the scaled activations the trainer sees."""
    step: int
    tokens: int
    loss: float
    sq_err: float            # squared reconstruction error per token (summed over d_in)
    aux: float               # AuxK loss (normalised by the residual's variance)
    l0: float
    aux_dead_fraction: float  # latents dead for AuxK (silent for the dead window while eligible)
    lr: float
    aux_share: float = 0.0    # aux_k_coeff * aux / loss
    pool_churn: float | None = None  # Sampled-SAE: pool fraction new since the previous batch


class TrainResult(NamedTuple):
    sae: SAE
    history: list[StepLog]
    scale: float


# epoch seed -> batches of raw activations; an ``EpochBatches`` (sae_core.sae.data) also takes the
# batch to start from and says how many batches an epoch has, so a resumed run reads nothing twice
BatchSource = Callable[[int], Iterator[torch.Tensor]]


def geometric_median(x_ND: torch.Tensor, iters: int = 30, eps: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances to the rows."""
    y = x_ND.mean(0)
    for _ in range(iters):
        w_N = 1.0 / (x_ND - y).norm(dim=1).clamp_min(eps)
        y_new = (w_N[:, None] * x_ND).sum(0) / w_N.sum()
        if (y_new - y).norm() < eps * (1 + y.norm()):
            return y_new
        y = y_new
    return y


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


@torch.no_grad()
def init_decoder_from_data(sae: SAE, x_ND: torch.Tensor, noise: float = 0.5,
                           generator: torch.Generator | None = None) -> None:
    """Point each decoder row at a random data row: W_dec[i] = unit(unit(x_j - b_dec) + noise * g/sqrt(d)),
    g Gaussian, rows j of ``x_ND`` distinct (drawn with replacement only when there are fewer rows
    than latents); then W_enc = W_dec^T.

    Why: random unit rows mostly point where the data has little variance, so under a batch-wide
    top-k they never win a slot and die before AuxK can revive them; rows drawn from the data start
    with a large activation on at least the tokens like the one they came from. The noise keeps
    rows drawn from the same data row apart. Draws from ``generator`` (a CPU one; None: torch's
    global RNG), so the result does not depend on the device.
    """
    n, d = x_ND.shape
    S = sae.cfg.d_sae
    rows = (torch.randperm(n, generator=generator)[:S] if n >= S
            else torch.randint(n, (S,), generator=generator)).to(x_ND.device)
    dirs = x_ND[rows] - sae.b_dec
    dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-12)
    dirs = dirs + noise * torch.randn(dirs.shape, generator=generator, dtype=dirs.dtype).to(dirs.device) / math.sqrt(d)
    sae.W_dec.copy_(dirs.to(sae.W_dec.dtype))
    sae.normalize_decoder()
    sae.W_enc.copy_(sae.W_dec.T)


@torch.no_grad()
def fit_encoder_scale(sae: SAE, x_ND: torch.Tensor) -> float:
    """Scale ``W_enc`` by the c in (0, 1] that makes the initial reconstruction least-squares
    optimal on ``x_ND`` (already scaled, ``b_dec`` already set); returns c.

    Why: at init each code is a token's projection on its latent's random unit direction, and the
    k (or, for BatchTopK, up to hundreds on high-norm tokens) codes a token gets are decoded along
    nearly random directions, so ||x_hat - b_dec|| is several times ||x - b_dec||. At init
    b_enc = 0 and every activation rule here (ReLU, TopK, BatchTopK, the Sampled pool, JumpReLU at
    threshold 0) is positively homogeneous, so W_enc -> c W_enc keeps the same latents active and
    scales y = x_hat - b_dec by exactly c; the best c is <x - b_dec, y> / <y, y>. The decoder keeps
    its unit-norm rows. One forward pass under the training rule; buffers it updates (thresholds,
    pool statistics) are restored, so the probe leaves no trace but the scale.
    """
    saved = {name: buf.clone() for name, buf in sae.named_buffers()}
    was_training = sae.training
    sae.train()
    y_ND = sae(x_ND).x_hat - sae.b_dec
    sae.train(was_training)
    for name, buf in sae.named_buffers():
        buf.copy_(saved[name])
    c = ((x_ND - sae.b_dec) * y_ND).sum() / (y_ND * y_ND).sum().clamp_min(1e-30)
    if not torch.isfinite(c) or c <= 0:  # nothing fired, or no useful direction: leave it
        return 1.0
    c = min(1.0, c.item())  # capped at the unscaled init: the fit is meant to remove overshoot
    sae.W_enc.mul_(c)
    return c


CALIBRATION_BATCHES = 16
INIT_LOOKAHEAD_BATCHES = 7  # decoder_init="data" draws from at most 1 + this many batches


@torch.no_grad()
def calibrate_inference(sae: SAE, batches_ND: list[torch.Tensor]) -> None:
    """Set a BatchTopK-family SAE's inference rule at the final weights: the Sampled-SAE's pool
    (``calibrate_pool``), then the threshold.

    The training EMA of the smallest kept activation lags behind the weights (it still remembers
    early steps, whose cut-off was higher), which left inference L0 well below k in short runs.
    Averaging the training rule's cut-off over a few fresh batches at the final weights gives an
    inference L0 close to k. Needs eval mode (no EMA or pool statistics are updated).
    """
    if not hasattr(sae, "batch_rule_coords"):
        return
    if hasattr(sae, "calibrate_pool"):  # Sampled-SAE: its inference pool first (sampled.py)
        sae.calibrate_pool(batches_ND)
    lows = []
    for x_ND in batches_ND:
        low = min_kept(sae.batch_rule_coords(sae.pre_acts(x_ND))[2])
        if torch.isfinite(low):
            lows.append(low)
    if lows:
        sae.threshold.copy_(torch.stack(lows).mean())


def estimate_scale(first_batch_ND: torch.Tensor) -> float:
    return math.sqrt(first_batch_ND.shape[1]) / first_batch_ND.norm(dim=1).mean().clamp_min(1e-12).item()


@torch.no_grad()
def fold_scale(sae: SAE, scale: float) -> None:
    """Make an SAE trained on s*x read raw x: codes shrink by s, the decoder rows stay unit-norm."""
    sae.b_enc.div_(scale)
    sae.b_dec.div_(scale)
    if hasattr(sae, "threshold"):
        sae.threshold.div_(scale)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Half-precision results (autocast) in float32 for the loss; anything else as it is."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def _check_finite(x_ND: torch.Tensor, step: int) -> None:
    if not torch.isfinite(x_ND).all():
        bad = (~torch.isfinite(x_ND)).any(1).nonzero()[0].item()
        raise ActivationFileError(f"training batch {step} contains NaN or Inf (first bad row {bad} "
                                  "of the batch); clean the activations before training")


class _FiniteWatch:
    """NaN or Inf in the training batches: checked at once on the CPU; on CUDA the first bad step
    is recorded on the device and raised at the next ``flush`` (before any checkpoint is written),
    so the check never makes the GPU wait."""

    def __init__(self, device: torch.device):
        self.lazy = kernels.defer_host_reads(torch.empty(0, device=device))
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device) if self.lazy else None

    def check(self, x_ND: torch.Tensor, step: int) -> None:
        if not self.lazy:
            return _check_finite(x_ND, step)
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


def _lr_at(step: int, tcfg: TrainerConfig, base: float) -> float:
    if step < tcfg.warmup_steps:
        return base * (step + 1) / tcfg.warmup_steps
    decay_start = int(tcfg.steps * (1 - tcfg.decay_fraction))
    if step >= decay_start:
        return base * max(0.0, (tcfg.steps - step) / max(1, tcfg.steps - decay_start))
    return base


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


class _Run:
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
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=self.lr, betas=(0.9, 0.999))
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
        for group in self.opt.param_groups:
            group["lr"] = _lr_at(step, tcfg, self.lr)
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
        calibrate_inference(self.sae, calib_ND)
        fold_scale(self.sae, scale)
        if hasattr(self.sae, "pool_generator"):
            self.sae.pool_generator = None  # the trained SAE does not hold on to the trainer's RNG
        return TrainResult(self.sae, self.history, scale)


def run_bytes(cfg: SAEConfig, tcfg: TrainerConfig, with_buffer: bool = True) -> int:
    """Memory one run holds between its steps in a lockstep group: W_enc and W_dec with their
    gradients and two Adam moments (8 matrices of d_in x d_sae) and, ``with_buffer``, the
    pre-activation buffer (batch x d_sae), which runs of one shape share. A step's temporaries
    come and go, one run at a time."""
    item = TORCH_DTYPES[cfg.dtype].itemsize
    return item * cfg.d_sae * (8 * cfg.d_in + (tcfg.batch_size if with_buffer else 0))


def device_for(tcfg: TrainerConfig) -> torch.device:
    return torch.device(tcfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _resume_states(runs: list[_Run]) -> list[TrainState | None]:
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
    ``train_sae`` would have trained it alone (its own RNG, ``_Run``). ``ckpt_dirs`` and
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
    runs = [_Run(cfg, tcfg, device, ckpt, cb, buffers, dp) for cfg, ckpt, cb in zip(cfgs, ckpt_dirs, on_steps)]
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
    _check_finite(first_ND, start)

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
            _check_finite(ahead[-1], len(ahead))
        for run, n in zip(runs, n_ahead):
            rows_ND = (torch.cat([first_ND] + [distributed.gather_rows(b.to(device), dp) for b in ahead[:n]])
                       * scale if tcfg.decoder_init == "data" else None)
            run.init(sample_ND, rows_ND)
            del rows_ND

    del first_ND
    x_ND = local_first_ND
    watch, every = _FiniteWatch(device), tcfg.sync_interval(device)
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
