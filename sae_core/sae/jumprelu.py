"""JumpReLU SAE (inference): a latent fires when its pre-activation exceeds its own threshold.

This is what BatchTopK-family SAEs become at inference, and what they export to SAELens as.
Training a JumpReLU directly (straight-through threshold gradients) is not offered here.
"""
from __future__ import annotations

import torch
from torch import nn

from sae_core.sae.base import SAE


class JumpReLUSAE(SAE):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.threshold = nn.Parameter(torch.zeros(cfg.d_sae, dtype=self.W_enc.dtype),
                                      requires_grad=False)

    def activate(self, pre_NS: torch.Tensor) -> torch.Tensor:
        return pre_NS * (pre_NS > self.threshold)

    @torch.no_grad()
    def encode_coords(self, x_ND, out=None):
        pre_NS = self.pre_acts(x_ND, out)
        rows_M, cols_M, vals_M = self._coords_above(pre_NS, self.threshold)
        keep_M = vals_M != 0  # a negative threshold lets pre = 0 through, which encode gives as 0
        return rows_M[keep_M], cols_M[keep_M], vals_M[keep_M]
