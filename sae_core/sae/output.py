"""What an SAE's forward pass returns (``SAE.forward`` and ``kernels.sae_forward``)."""
from __future__ import annotations

import torch


class ForwardOutput:
    """What ``forward`` returns; unpacks as ``x_hat, z, pre`` like the named tuple it was.

    - ``x_hat [N, d_in]``: reconstruction.
    - ``z [N, d_sae]``: codes, dense in storage. On the fast path (see ``kernels``) it is built
      from ``codes`` on first access, so the trainer never pays for it.
    - ``pre [N, d_sae]``: pre-activations. On the fast path they carry no autograd graph.
    - ``codes``: the nonzero codes as coordinates (``kernels.SparseCodes``) on the fast path,
      else None; the gradient then flows through ``codes.vals_M``.
    """
    __slots__ = ("x_hat", "_z", "pre", "codes")

    def __init__(self, x_hat, z=None, pre=None, codes=None):
        self.x_hat, self._z, self.pre, self.codes = x_hat, z, pre, codes

    @property
    def z(self) -> torch.Tensor:
        if self._z is None:
            self._z = self.codes.to_dense()
        return self._z

    def __iter__(self):
        return iter((self.x_hat, self.z, self.pre))

    def fired(self) -> torch.Tensor:
        """Boolean ``[d_sae]``: latents active on at least one token of the batch."""
        return self.codes.fired() if self.codes is not None else (self.z != 0).any(0)

    def l0(self) -> float:
        """Mean number of active latents per token."""
        if self.codes is not None:
            return self.codes.vals_M.numel() / max(1, self.codes.n_rows)
        return (self.z != 0).sum(-1).float().mean().item()
