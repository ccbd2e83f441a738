"""Pearson correlation of every A feature with every B feature, streamed over token batches.

``CorrelationAccumulator.update(a, b)`` takes the two SAEs' codes of the same token rows (``[n,
S_a]`` and ``[n, S_b]``) and adds to running sums kept in float64 (count, per-feature sums and
sums of squares, and the ``S_a x S_b`` cross sums); nothing of size tokens x features outlives a
batch. ``result()`` turns the sums into the correlation matrix, the same as z-scoring each feature
over all tokens and taking ``Z_a^T Z_b / n`` (the paper's computation), with 0 for a feature that
never varies (a dead latent), which is reported.

The cross sums of a batch are computed on the codes' device (``add_cross``): as a dense float32
matmul on a GPU, and on the CPU from the active entries alone when the codes are sparse enough
(an SAE's usually are), a small fraction of the dense product's work.

``TopTokens`` keeps each feature's ``m`` highest activations and the token at each, for the
"non-concept" and shared-token filters of matching.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sae_core.universality.measures import UniversalityError

# On the CPU one active pair (gathered indices and one scattered add) costs about as much as this
# many multiply-adds of a dense float32 matmul (measured on this 2-core machine with BatchTopK
# codes of 4096 latents, k 32: ~130 ns per pair against ~8.5 ps per multiply-add, so there the
# dense product wins narrowly; far sparser codes, or wider SAEs, take the pair path).
PAIR_COST_IN_MACS = 15_000


def add_cross(cross: torch.Tensor, a_NA: torch.Tensor, b_NB: torch.Tensor) -> None:
    """``cross += a^T b`` (``cross`` float64 ``[S_a, S_b]``), the cheapest way for these codes.

    On a GPU, or when many latents fire, a dense float32 matmul. On the CPU with sparse codes,
    from the active entries alone: every token adds the outer product of its active A values with
    its active B values (``sum_t |A_t| |B_t|`` scattered adds instead of ``n S_a S_b``
    multiply-adds), with no padding, so rows that fire more than the average cost only their own."""
    if a_NA.device.type == "cpu":
        ra, ia = a_NA.nonzero(as_tuple=True)
        rb, ib = b_NB.nonzero(as_tuple=True)
        per_b = torch.bincount(rb, minlength=a_NA.shape[0])
        sizes = per_b[ra]                                  # B entries each A entry pairs with
        n_pairs = int(sizes.sum())
        if n_pairs * PAIR_COST_IN_MACS < a_NA.shape[0] * a_NA.shape[1] * b_NB.shape[1]:
            if n_pairs:
                start_b = torch.cumsum(per_b, 0) - per_b
                rep = torch.repeat_interleave(torch.arange(ra.numel()), sizes)
                offset = torch.arange(n_pairs) - (torch.cumsum(sizes, 0) - sizes)[rep]
                jb = start_b[ra[rep]] + offset
                vals = a_NA[ra, ia][rep] * b_NB[rb, ib][jb]
                cross.view(-1).index_add_(0, ia[rep] * b_NB.shape[1] + ib[jb], vals.double())
            return
    cross += (a_NA.t() @ b_NB).double()


class CorrelationAccumulator:
    def __init__(self, d_a: int, d_b: int, device: str | torch.device = "cpu"):
        f64 = dict(dtype=torch.float64, device=device)
        self.n = 0
        self.sum_a, self.sum_b = torch.zeros(d_a, **f64), torch.zeros(d_b, **f64)
        self.sq_a, self.sq_b = torch.zeros(d_a, **f64), torch.zeros(d_b, **f64)
        self.cross = torch.zeros(d_a, d_b, **f64)

    def update(self, a_NA: torch.Tensor, b_NB: torch.Tensor) -> None:
        if a_NA.shape[0] != b_NB.shape[0]:
            raise UniversalityError(f"codes of {a_NA.shape[0]} and {b_NB.shape[0]} tokens: both sides must "
                                    "be the same token rows")
        if (a_NA.shape[1], b_NB.shape[1]) != (self.sum_a.numel(), self.sum_b.numel()):
            raise UniversalityError(f"codes of width {a_NA.shape[1]} and {b_NB.shape[1]}, but the accumulator "
                                    f"was made for {self.sum_a.numel()} and {self.sum_b.numel()} features")
        if a_NA.shape[0] == 0:
            return
        a, b = a_NA.float(), b_NB.float()
        self.n += a.shape[0]
        self.sum_a += a.sum(0, dtype=torch.float64)
        self.sum_b += b.sum(0, dtype=torch.float64)
        self.sq_a += (a * a).sum(0, dtype=torch.float64)
        self.sq_b += (b * b).sum(0, dtype=torch.float64)
        add_cross(self.cross, a, b)

    def result(self) -> "Correlation":
        if self.n < 2:
            raise UniversalityError(f"correlation over {self.n} token(s): give at least 2 (thousands, really)")
        n = self.n
        mean_a, mean_b = self.sum_a / n, self.sum_b / n
        var_a = (self.sq_a / n - mean_a ** 2).clamp_min(0)
        var_b = (self.sq_b / n - mean_b ** 2).clamp_min(0)
        cov = self.cross / n - mean_a[:, None] * mean_b[None, :]
        # a latent whose variance is at rounding level of its mean square never varies
        alive_a = var_a > 1e-12 * (self.sq_a / n).clamp_min(1e-30)
        alive_b = var_b > 1e-12 * (self.sq_b / n).clamp_min(1e-30)
        std_a = torch.where(alive_a, var_a.sqrt(), torch.ones_like(var_a))
        std_b = torch.where(alive_b, var_b.sqrt(), torch.ones_like(var_b))
        corr = (cov / std_a[:, None] / std_b[None, :]).clamp(-1, 1)
        corr = corr * alive_a[:, None] * alive_b[None, :]
        return Correlation(corr.float().cpu(), alive_a.cpu(), alive_b.cpu(), n)


@dataclass(frozen=True)
class Correlation:
    corr: torch.Tensor     # [S_a, S_b] float32 Pearson correlation (0 where either feature is dead)
    alive_a: torch.Tensor  # [S_a] bool: the A feature varied over the tokens
    alive_b: torch.Tensor  # [S_b] bool
    n_tokens: int


class TopTokens:
    """Each feature's ``m`` highest activations over the stream and the token id at each."""

    def __init__(self, d: int, m: int = 5, device: str | torch.device = "cpu"):
        self.m = m
        self.values = torch.full((m, d), -torch.inf, device=device)
        self.tokens = torch.full((m, d), -1, dtype=torch.int64, device=device)

    def update(self, codes_NS: torch.Tensor, tokens_N: torch.Tensor) -> None:
        k = min(self.m, codes_NS.shape[0])
        if k == 0:
            return
        v, rows = codes_NS.topk(k, dim=0)                      # [k, S]
        vals = torch.cat([self.values, v.float()])
        toks = torch.cat([self.tokens, tokens_N.to(rows.device)[rows]])
        best = vals.topk(self.m, dim=0).indices
        self.values, self.tokens = vals.gather(0, best), toks.gather(0, best)

    def sets(self) -> list[set[int]]:
        """Per feature: the distinct tokens of its top activations that are above 0."""
        fired = (self.values > 0).cpu()
        toks = self.tokens.cpu()
        return [set(toks[fired[:, s], s].tolist()) for s in range(toks.shape[1])]
