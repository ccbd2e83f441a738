"""Reconstruction, sparsity and shared-structure metrics of an SAE on activations.

Definitions (each tested against a numpy reference):
- L0: mean number of active (non-zero) latents per token.
- FVU: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2, the mean taken per dimension over tokens;
  explained variance = 1 - FVU. MSE: mean squared error per element. Cosine: mean per-token cosine
  similarity of x and x_hat.
- dead fraction: latents never active over the evaluation set; dense fraction: latents active on
  more than 10% of its tokens. Density: fraction of tokens on which each latent is active.
- shared structure, per batch: distinct latents active anywhere in the batch; pairwise overlap
  of the tokens' active sets (see ``shared_structure``); fraction of the batch's activation mass
  carried by the ``k`` latents that carry the most of it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

DENSE_THRESHOLD = 0.10


@dataclass(frozen=True)
class ReconstructionMetrics:
    l0: float
    fvu: float
    explained_variance: float
    mse: float
    cosine: float
    dead_fraction: float
    dense_fraction: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SharedStructure:
    distinct_latents: float      # mean over batches
    pairwise_overlap: float      # mean shared active latents between two tokens / L0
    top_mass_fraction: float     # share of the batch's activation mass on its k heaviest latents

    def to_json(self) -> dict:
        return asdict(self)


class MetricAccumulator:
    """Streams batches ``(x, x_hat, z)`` and gives the metrics over all of them at the end."""

    def __init__(self, d_sae: int):
        self.n = 0
        self.active_S = torch.zeros(d_sae, dtype=torch.float64)
        self.l0_sum = self.sq_err = self.mse_sum = self.cos_sum = 0.0
        self.x_sum = None
        self.x_sq_sum = None

    @torch.no_grad()
    def update(self, x_ND: torch.Tensor, x_hat_ND: torch.Tensor, z_NS: torch.Tensor) -> None:
        x, x_hat = x_ND.double(), x_hat_ND.double()
        active = z_NS != 0
        self.n += x.shape[0]
        self.active_S += active.sum(0).double().cpu()
        self.l0_sum += active.sum().item()
        err = (x - x_hat).pow(2)
        self.sq_err += err.sum().item()
        self.mse_sum += err.mean(1).sum().item()
        self.cos_sum += torch.nn.functional.cosine_similarity(x, x_hat, dim=1).sum().item()
        # Per-dimension sums give the total variance around the per-dimension mean in one pass.
        s, sq = x.sum(0).cpu(), x.pow(2).sum(0).cpu()
        self.x_sum = s if self.x_sum is None else self.x_sum + s
        self.x_sq_sum = sq if self.x_sq_sum is None else self.x_sq_sum + sq

    def result(self) -> ReconstructionMetrics:
        total_var = (self.x_sq_sum - self.x_sum.pow(2) / self.n).sum().item()
        fvu = self.sq_err / total_var
        density = self.active_S / self.n
        return ReconstructionMetrics(
            l0=self.l0_sum / self.n, fvu=fvu, explained_variance=1 - fvu, mse=self.mse_sum / self.n,
            cosine=self.cos_sum / self.n, dead_fraction=(density == 0).double().mean().item(),
            dense_fraction=(density > DENSE_THRESHOLD).double().mean().item())

    def density(self) -> torch.Tensor:
        """Fraction of tokens each latent was active on, ``[d_sae]``."""
        return (self.active_S / max(1, self.n)).float()


@torch.no_grad()
def shared_structure(z_NS: torch.Tensor, k: int) -> tuple[float, float, float]:
    """(distinct latents, pairwise overlap, top-k mass fraction) of one batch.

    Pairwise overlap: the mean over ordered token pairs (i != j) of |A_i & A_j|, divided by the
    batch's L0, so 1 means every token uses the same active set. It is computed from per-latent
    counts c_s (sum over pairs of |A_i & A_j| = sum_s c_s (c_s - 1)), never as an N x N matrix.
    """
    active_NS = z_NS != 0
    n = z_NS.shape[0]
    count_S = active_NS.sum(0).double()
    distinct = (count_S > 0).sum().item()
    l0 = count_S.sum().item() / n
    shared_pairs = (count_S * (count_S - 1)).sum().item() / max(1, n * (n - 1))
    overlap = shared_pairs / l0 if l0 > 0 else 0.0
    mass_S = z_NS.abs().sum(0).double()
    top_mass = (mass_S.topk(min(k, z_NS.shape[1])).values.sum() / mass_S.sum().clamp_min(1e-12)).item()
    return float(distinct), overlap, top_mass


def density_histogram(density_S: torch.Tensor, bins: int = 40) -> tuple[list[float], list[int]]:
    """Histogram of log10 feature density over [-8, 0] (dead latents counted at the left edge)."""
    log_d = torch.log10(density_S.double().clamp_min(1e-8))
    counts = torch.histc(log_d, bins=bins, min=-8.0, max=0.0)
    edges = torch.linspace(-8.0, 0.0, bins + 1)
    return edges.tolist(), [int(c) for c in counts.tolist()]
