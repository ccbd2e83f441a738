"""The SAE interface every architecture shares: encode, decode, forward, loss.

Shapes: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]`` (unit-norm rows),
``b_dec [d_in]``; ``pre = (x - b_dec) @ W_enc + b_enc``. An architecture only says how
pre-activations become codes (``activate``) and what it adds to the loss (``extra_loss``); the
trainer knows nothing else about it.
"""
from __future__ import annotations

import torch
from torch import nn

from sae_core.io import TORCH_DTYPES
from sae_core.sae import kernels
from sae_core.sae.config import SAEConfig
from sae_core.sae.output import ForwardOutput


class SAE(nn.Module):
    """Base class; subclasses override ``activate`` (and ``extra_loss`` when they have one)."""

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        dtype = TORCH_DTYPES[cfg.dtype]
        self.W_enc = nn.Parameter(torch.empty(cfg.d_in, cfg.d_sae, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.W_dec = nn.Parameter(torch.empty(cfg.d_sae, cfg.d_in, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Unit-norm random decoder rows, encoder = decoder transpose (so x ~ decode(encode(x)) early)."""
        self.W_dec.copy_(torch.randn(self.W_dec.shape, generator=generator, dtype=self.W_dec.dtype))
        self.normalize_decoder()
        self.W_enc.copy_(self.W_dec.T)

    # --- the interface -------------------------------------------------------------------------
    def pre_acts(self, x_ND: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``(x - b_dec) W_enc + b_enc``; ``out`` (2-D input only): a ``[N, d_sae]`` buffer to
        write into, which saves a large allocation (and its page faults) per call in hot loops."""
        if x_ND.dim() == 2:  # addmm adds the bias inside the matmul: one pass less over [N, d_sae]
            return torch.addmm(self.b_enc, x_ND - self.b_dec, self.W_enc, out=out)
        return (x_ND - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre_NS: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``[..., d_sae]`` for activations ``[..., d_in]``."""
        lead = x.shape[:-1]
        return self.activate(self.pre_acts(x.reshape(-1, self.cfg.d_in))).reshape(*lead, -1)

    @torch.no_grad()
    def encode_coords(self, x_ND: torch.Tensor, out: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The nonzero entries of ``encode(x_ND)`` as ``rows_M, cols_M, vals_M`` in row-major
        order (rows ascending, columns ascending within a row), without building the dense code
        matrix where the rule allows. Inference only. ``out``: scratch for the pre-activations."""
        z_NS = self.activate(self.pre_acts(x_ND, out))
        rows_M, cols_M = z_NS.nonzero(as_tuple=True)
        return rows_M, cols_M, z_NS[rows_M, cols_M]

    @staticmethod
    def _coords_above(pre_NS: torch.Tensor, threshold: torch.Tensor | float) -> tuple[torch.Tensor, ...]:
        """Row-major coordinates and values of ``pre > threshold`` (threshold >= 0 or broadcast)."""
        rows_M, cols_M = (pre_NS > threshold).nonzero(as_tuple=True)
        return rows_M, cols_M, pre_NS[rows_M, cols_M]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def forward(self, x_ND: torch.Tensor, pre_buf: torch.Tensor | None = None) -> ForwardOutput:
        """``activate`` then ``decode``, or the equivalent sparse kernels (``kernels.sae_forward``).
        ``pre_buf``: scratch ``[rows, d_sae]`` for the fast path's pre-activations, used when
        rows >= N (``out.pre`` is then a view of it, valid until the buffer's next use)."""
        return kernels.sae_forward(self, x_ND, pre_buf)

    # the fraction of the training pool that changed since the previous batch (Sampled-SAE;
    # None for rules without a pool), logged by the trainer
    pool_churn: float | None = None

    # k-sparse architectures set ``sparse_rule`` while their rule keeps few latents per token and
    # implement ``select_active``; the kernels then skip every dense [N, d_sae] step but one.
    sparse_rule = False

    def select_active(self, pre_NS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``rows_M, cols_M`` (rows ascending) of the entries ``activate`` keeps with value > 0.
        Called under no_grad; must have the same side effects as ``activate`` (e.g. thresholds)."""
        raise NotImplementedError

    def extra_loss(self, out: ForwardOutput) -> torch.Tensor | None:
        """Architecture-specific loss term (e.g. the L1 penalty), or None."""
        return None

    def aux_eligible(self) -> torch.Tensor | None:
        """Boolean ``[d_sae]``: the latents the last training step's rule could have fired, whose
        silence counts towards "dead" for AuxK; None: every latent (the Sampled-SAE's pool
        excludes most latents by design, ``sampled.py``)."""
        return None

    # --- decoder geometry, used by the trainer ---------------------------------------------------
    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_grads(self) -> None:
        """Project out each decoder row's gradient component along the row (keeps norms at 1)."""
        if self.W_dec.grad is None:
            return
        parallel_S = (self.W_dec.grad * self.W_dec).sum(dim=1, keepdim=True)
        self.W_dec.grad.sub_(parallel_S * self.W_dec)

    @property
    def device(self) -> torch.device:
        return self.W_enc.device
