"""BatchTopK SAE (Bussmann et al. 2024): keep the top k*B ReLU activations over a batch of B tokens.

Training codes depend on the whole batch, so inference cannot use the same rule on one token.
At inference every latent fires when its pre-activation exceeds one global threshold theta, the
running average of the smallest activation kept in training batches
(theta <- m*theta + (1-m)*min kept), i.e. the SAE runs as a JumpReLU.
"""
from __future__ import annotations

import torch

from sae_core import distributed
from sae_core.sae import kernels
from sae_core.sae.base import SAE


def batch_topk(acts_NS: torch.Tensor, k_total: int) -> torch.Tensor:
    """Zero all but the ``k_total`` largest entries of the whole matrix; among values equal to
    the k_total-th largest, the lowest flat indices are kept (so the fast kernels can agree)."""
    return kernels.batch_topk_dense(acts_NS, k_total)


def global_min(low: torch.Tensor) -> torch.Tensor:
    """A 0-dim minimum, over every rank's when data-parallel (itself otherwise)."""
    return distributed.all_min_(low.reshape(1))[0] if distributed.active() is not None else low


def min_kept(kept_M: torch.Tensor) -> torch.Tensor:
    """The smallest of ``kept_M`` (over every rank's, data-parallel); +inf when none is kept."""
    return global_min(kept_M.min() if kept_M.numel() else kept_M.new_tensor(torch.inf))


class BatchTopKSAE(SAE):
    def __init__(self, cfg):
        super().__init__(cfg)
        # A buffer, not a parameter: saved with the weights, never touched by the optimizer.
        self.register_buffer("threshold", torch.zeros((), dtype=self.W_enc.dtype))
        self.register_buffer("threshold_initialized", torch.zeros((), dtype=torch.bool))
        self.threshold_updates = True  # the trainer holds the EMA still before dictionary_learning's start step

    def activate(self, pre_NS: torch.Tensor) -> torch.Tensor:
        relu_NS = torch.relu(pre_NS)
        if not self.training:
            return relu_NS * (relu_NS > self.threshold)
        z_NS = self.batch_select(relu_NS)
        # the smallest kept value without a data-dependent selection (no host sync on a GPU)
        self._update_threshold(global_min(torch.where(z_NS > 0, z_NS, torch.inf).amin().detach()))
        return z_NS

    @torch.no_grad()
    def encode_coords(self, x_ND, out=None):
        """Inference: relu(pre) > theta, i.e. pre > max(theta, 0), with no dense relu copy."""
        return self._coords_above(self.pre_acts(x_ND, out), self.threshold.clamp_min(0))

    @property
    def sparse_rule(self) -> bool:
        return self.training  # inference is a dense JumpReLU

    def select_active(self, pre_NS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fast path's training rule: coordinates of what ``batch_select`` keeps."""
        rows_M, cols_M, kept_M = self.batch_rule_coords(pre_NS)
        self._update_threshold(min_kept(kept_M))
        return rows_M, cols_M

    @torch.no_grad()
    def batch_rule_coords(self, pre_NS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``rows_M, cols_M, values_M`` of what the training rule keeps on this batch; no side
        effects (no threshold update)."""
        flat_M = kernels.batch_topk_indices(pre_NS, self.cfg.k * pre_NS.shape[0])
        return flat_M // pre_NS.shape[1], flat_M % pre_NS.shape[1], pre_NS.reshape(-1).index_select(0, flat_M)

    def batch_select(self, relu_NS: torch.Tensor) -> torch.Tensor:
        """The training-time selection rule (Sampled-SAE overrides it)."""
        return batch_topk(relu_NS, self.cfg.k * relu_NS.shape[0])

    @torch.no_grad()
    def _update_threshold(self, low: torch.Tensor) -> None:
        """EMA of ``low``, the smallest kept (positive) activation of a training batch (+inf when
        none was kept: then nothing changes; data-parallel: the global batch's, ``min_kept``).
        Tensor ops only, so a GPU never waits for the host here."""
        if not self.threshold_updates:
            return
        m = self.cfg.threshold_momentum
        kept = torch.isfinite(low)
        ema = torch.where(self.threshold_initialized, self.threshold * m + (1 - m) * low, low)
        self.threshold.copy_(torch.where(kept, ema, self.threshold))
        self.threshold_initialized.logical_or_(kept)

    def encode_batch_rule(self, x: torch.Tensor) -> torch.Tensor:
        """Encode with the training rule over the given batch (no threshold update)."""
        lead = x.shape[:-1]
        relu_NS = torch.relu(self.pre_acts(x.reshape(-1, self.cfg.d_in)))
        return self.batch_select(relu_NS).reshape(*lead, -1)
