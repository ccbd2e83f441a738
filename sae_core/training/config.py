"""The trainer's configuration (``TrainerConfig``) and what it reports: one ``StepLog`` per step,
a ``TrainResult`` per SAE. ``training`` documents what each choice does."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple

import torch

from sae_core.errors import SAECoreError
from sae_core.sae.base import SAE


THRESHOLD_RULES = ("calibrated", "ema")


@dataclass(frozen=True)
class TrainerConfig:
    total_tokens: int                 # tokens to train on (steps = total_tokens // batch_size)
    batch_size: int = 4096
    lr: float | None = field(default=None, metadata={"help": "Adam lr (default 2e-4/sqrt(d_sae/2^14))."})
    warmup_steps: int = 50
    decay_fraction: float = 0.2
    aux_k_coeff: float = 1 / 32
    dead_tokens: int | None = None    # a latent silent this long is "dead" for AuxK (None: auto)
    decoder_init: str = "data"        # "data": directions of data rows, or "random" unit rows
    aux_fraction: float = 0.25        # AuxK reads this fraction of each batch's tokens (random)
    seed: int = 0
    checkpoint_every: int = 0         # steps; 0 = no checkpoints
    device: str | None = field(default=None, metadata={
        "help": "Train on cpu, cuda or cuda:N [default: cuda when available]."})
    # "bf16": the SAE's forward and loss under bfloat16 autocast
    autocast: str | None = field(default=None, metadata={
        "help": "bf16: run under bfloat16 autocast (weights stay float32)."})
    sync_every: int | None = None     # steps between host reads of the log (None: 1 on CPU, 64 on CUDA)
    grad_clip: float | None = field(default=1.0, metadata={
        "help": "Clip the gradient's global norm to this, as dictionary_learning does (None: no clipping)."})
    threshold: str = field(default="calibrated", metadata={
        "help": "BatchTopK inference threshold: calibrated (at the final weights) or ema (dictionary_learning: "
                "the EMA of the smallest kept activation from step --threshold-start, kept as it is)."})
    threshold_start: int = 1000       # threshold="ema": the EMA moves after this step (dictionary_learning: 1000)

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
        if self.grad_clip is not None and not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            raise SAECoreError(f"grad_clip={self.grad_clip} must be a positive number (or unset: no clipping)")
        if self.threshold not in THRESHOLD_RULES:
            raise SAECoreError(f"threshold={self.threshold!r}; choose one of {', '.join(THRESHOLD_RULES)}")
        if self.threshold == "ema" and not 0 <= self.threshold_start < self.steps - 1:
            raise SAECoreError(f"threshold='ema' starts its EMA at step {self.threshold_start}, but the run has "
                               f"{self.steps} steps: the threshold would never be set; lower --threshold-start "
                               "or use the calibrated threshold")
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


# epoch seed -> batches of raw activations; an ``EpochBatches`` (sae_core.training.data) also takes the
# batch to start from and says how many batches an epoch has, so a resumed run reads nothing twice
BatchSource = Callable[[int], Iterator[torch.Tensor]]
