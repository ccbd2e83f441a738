"""ReLU SAE with an L1 penalty weighted by decoder norms (the standard, Anthropic-style SAE)."""
from __future__ import annotations

import torch

from sae_core.sae.base import SAE
from sae_core.sae.output import ForwardOutput


class ReLUSAE(SAE):
    def activate(self, pre_NS: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre_NS)

    @torch.no_grad()
    def encode_coords(self, x_ND, out=None):
        return self._coords_above(self.pre_acts(x_ND, out), 0.0)

    def extra_loss(self, out: ForwardOutput) -> torch.Tensor:
        # Weighting by ||W_dec row|| stops the L1 being gamed by shrinking codes and growing rows.
        l1_N = (out.z * self.W_dec.norm(dim=1)).sum(dim=-1)
        return self.cfg.l1_coeff * l1_N.mean()
