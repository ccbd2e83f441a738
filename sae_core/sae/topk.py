"""TopK SAE: keep the k largest ReLU pre-activations of each token (Gao et al. 2024)."""
from __future__ import annotations

import torch

from sae_core.sae import kernels
from sae_core.sae.base import SAE


def topk_per_row(acts_NS: torch.Tensor, k: int) -> torch.Tensor:
    """Zero all but the ``k`` largest entries of each row (ties broken by torch.topk)."""
    vals_NK, idx_NK = acts_NS.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(acts_NS).scatter_(-1, idx_NK, vals_NK)


class TopKSAE(SAE):
    sparse_rule = True  # the same rule in training and inference

    def activate(self, pre_NS: torch.Tensor) -> torch.Tensor:
        return topk_per_row(torch.relu(pre_NS), self.cfg.k)

    def select_active(self, pre_NS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return kernels.topk_row_indices(torch.relu(pre_NS), self.cfg.k)
