"""TopK SAE: keep the k largest ReLU pre-activations of each token (Gao et al. 2024)."""
from __future__ import annotations

import torch

from sae_core.sae import kernels
from sae_core.sae.kernels import topk_per_row
from sae_core.sae.base import SAE


class TopKSAE(SAE):
    sparse_rule = True  # the same rule in training and inference

    def activate(self, pre_NS: torch.Tensor) -> torch.Tensor:
        # The k largest of pre itself, then relu: the same torch.topk call on the same tensor as
        # the fast path (select_active) and encode_coords, so ties resolve alike in all three.
        return topk_per_row(pre_NS, self.cfg.k, relu=True)

    def select_active(self, pre_NS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return kernels.topk_row_indices(pre_NS, self.cfg.k)

    @torch.no_grad()
    def encode_coords(self, x_ND, out=None):
        """The same ``topk`` call as ``activate`` (so the same ties), on ``pre`` itself: entries
        with pre <= 0 are dropped, which is what relu before the top-k would zero."""
        pre_NS = self.pre_acts(x_ND, out)
        vals_NK, idx_NK = pre_NS.topk(self.cfg.k, dim=-1, sorted=False)
        idx_NK, order_NK = idx_NK.sort(dim=-1)
        vals_NK = vals_NK.gather(-1, order_NK)
        keep_NK = vals_NK > 0
        rows_NK = torch.arange(pre_NS.shape[0], device=pre_NS.device)[:, None].expand_as(idx_NK)
        return rows_NK[keep_NK], idx_NK[keep_NK], vals_NK[keep_NK]
