"""Pearson correlation of every A feature with every B feature, streamed over token batches.

``CorrelationAccumulator.update(a, b)`` takes the two SAEs' codes of the same token rows (``[n,
S_a]`` and ``[n, S_b]``) and adds to running sums kept in float64 (count, per-feature sums and
sums of squares, and the ``S_a x S_b`` cross sums, which gather each block of up to
``FLUSH_ROWS`` tokens in float32 first); nothing of size tokens x features outlives a batch.
``result()`` turns the sums into the correlation matrix, the same as z-scoring each feature over
all tokens and taking ``Z_a^T Z_b / n``, with 0 for a feature that never varies (a dead latent),
which is reported. (The authors' ``batched_correlation`` in wlg1/univ_feat_geom
``getScores_pythia.py`` z-scores with the n-1 standard deviation and divides by n: their values are
(n-1)/n of these, 0.99999 at 100k tokens; their argmax partners are the same.)

Codes arrive as their active entries (``Codes``: an SAE's ``encode_coords``), so the sums touch only
those; or dense (``[n, S]``: the SAE's ReLU pre-activations, which the authors correlate). The
cross sums of a batch are computed on the codes' device (``add_cross``): as a dense float32
matmul on a GPU, and on the CPU as sparse x dense when the codes are sparse enough (an
SAE's usually are), a small fraction of the dense product's work.

``TopTokens`` keeps each feature's ``m`` highest activations with the token and the row of each,
for the "non-concept" and shared-token filters of matching and for showing a pair in context.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from sae_core.universality.measures import UniversalityError

# On the CPU one multiply-add of a sparse x dense product (CSR codes of one side against the other
# side's dense codes) costs about as much as this many of a dense float32 matmul: measured on this
# 2-core machine at 4096 tokens x 4096 latents, k 32: ~4 GMAC/s against ~100 GMAC/s (0.13 s against
# 0.69 s a batch), so the sparse product wins while fewer than ~1 in 25 codes are active.
SPARSE_COST_IN_MACS = 25
# Cross sums gather in float32 over blocks of this many tokens, then go into the float64 sums (a
# float64 add of the whole S_a x S_b matrix every batch would cost more than the product itself).
FLUSH_ROWS = 32_768


@dataclass(frozen=True)
class Codes:
    """One batch of SAE codes as its nonzero entries, row-major (``SAE.encode_coords``' order):
    ``rows``, ``cols``, ``vals`` of a ``[n, width]`` code matrix that is never built unless asked."""
    rows: torch.Tensor
    cols: torch.Tensor
    vals: torch.Tensor
    n: int
    width: int

    @classmethod
    def of(cls, z_NS: torch.Tensor) -> "Codes":
        rows, cols = z_NS.nonzero(as_tuple=True)
        return cls(rows, cols, z_NS[rows, cols], z_NS.shape[0], z_NS.shape[1])

    @classmethod
    def encode(cls, sae, x_ND: torch.Tensor) -> "Codes":
        rows, cols, vals = sae.encode_coords(x_ND)
        return cls(rows, cols, vals, x_ND.shape[0], sae.cfg.d_sae)

    def dense(self) -> torch.Tensor:
        z = torch.zeros(self.n, self.width, dtype=self.vals.dtype, device=self.vals.device)
        z[self.rows, self.cols] = self.vals
        return z

    def head(self, m: int) -> "Codes":
        """The first ``m`` rows."""
        keep = int(torch.searchsorted(self.rows, torch.tensor(m, device=self.rows.device)))
        return Codes(self.rows[:keep], self.cols[:keep], self.vals[:keep], min(m, self.n), self.width)

    def transposed_csr(self) -> torch.Tensor:
        """``[width, n]`` sparse CSR (feature-major) of these codes."""
        order = torch.argsort(self.cols, stable=True)  # rows stay ascending within a feature
        crow = torch.zeros(self.width + 1, dtype=torch.int64, device=self.rows.device)
        crow[1:] = torch.cumsum(torch.bincount(self.cols, minlength=self.width), 0)
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore")
            return torch.sparse_csr_tensor(crow, self.rows[order], self.vals[order].float(), (self.width, self.n))


def _codes(z) -> Codes:
    return z if isinstance(z, Codes) else Codes.of(z)


def _shape(z: Codes | torch.Tensor) -> tuple[int, int]:
    return (z.n, z.width) if isinstance(z, Codes) else tuple(z.shape)


def _nnz(z: Codes | torch.Tensor) -> int:
    return z.vals.numel() if isinstance(z, Codes) else int(torch.count_nonzero(z))


def _dense(z: Codes | torch.Tensor) -> torch.Tensor:
    return z.dense() if isinstance(z, Codes) else z


def add_cross(cross: torch.Tensor, a: Codes | torch.Tensor, b: Codes | torch.Tensor) -> None:
    """``cross += a^T b`` (``cross`` float32 ``[S_a, S_b]``), the cheapest way for these codes.

    On a GPU, or when many latents fire (dense pre-activations), a dense float32 matmul. On the CPU
    with sparse codes, the sparser side as CSR against the other side's dense codes: ``nnz_a * S_b``
    multiply-adds instead of ``n * S_a * S_b``."""
    n, (S_a, S_b) = a.n if isinstance(a, Codes) else a.shape[0], cross.shape
    if cross.device.type == "cpu":
        nnz_a, nnz_b = _nnz(a), _nnz(b)
        if min(nnz_a * S_b, nnz_b * S_a) * SPARSE_COST_IN_MACS < n * S_a * S_b:
            if nnz_a * S_b <= nnz_b * S_a:
                cross.addmm_(_codes(a).transposed_csr(), _dense(b).float())
            else:
                cross.t().addmm_(_codes(b).transposed_csr(), _dense(a).float())
            return
    cross.addmm_(_dense(a).float().t(), _dense(b).float())


class CorrelationAccumulator:
    def __init__(self, d_a: int, d_b: int, device: str | torch.device = "cpu"):
        f64 = dict(dtype=torch.float64, device=device)
        self.n = 0
        self.sum_a, self.sum_b = torch.zeros(d_a, **f64), torch.zeros(d_b, **f64)
        self.sq_a, self.sq_b = torch.zeros(d_a, **f64), torch.zeros(d_b, **f64)
        self.cross = torch.zeros(d_a, d_b, **f64)
        self._block = torch.zeros(d_a, d_b, dtype=torch.float32, device=device)  # cross sums since the last flush
        self._block_rows = 0

    def update(self, a: Codes | torch.Tensor, b: Codes | torch.Tensor) -> None:
        """Add one batch: both sides' codes of the same token rows (``Codes``, or dense ``[n, S]``
        such as an SAE's pre-activations, which are summed as they are)."""
        (na, wa), (nb, wb) = (_shape(z) for z in (a, b))
        if na != nb:
            raise UniversalityError(f"codes of {na} and {nb} tokens: both sides must be the same token rows")
        if (wa, wb) != (self.sum_a.numel(), self.sum_b.numel()):
            raise UniversalityError(f"codes of width {wa} and {wb}, but the accumulator "
                                    f"was made for {self.sum_a.numel()} and {self.sum_b.numel()} features")
        if na == 0:
            return
        self.n += na
        for total, sq, c in ((self.sum_a, self.sq_a, a), (self.sum_b, self.sq_b, b)):
            if isinstance(c, Codes):
                v = c.vals.double()
                total.index_add_(0, c.cols, v)
                sq.index_add_(0, c.cols, v * v)
            else:
                v = c.double()
                total += v.sum(0)
                sq += (v * v).sum(0)
        add_cross(self._block, a, b)
        self._block_rows += na
        if self._block_rows >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._block_rows:
            self.cross += self._block
            self._block.zero_()
            self._block_rows = 0

    def result(self) -> "Correlation":
        if self.n < 2:
            raise UniversalityError(f"correlation over {self.n} token(s): give at least 2 (thousands, really)")
        self._flush()
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
    """Each feature's ``m`` highest activations over the stream, highest first, with the token id
    and the stream row (e.g. the activation store's row, for its context) of each; -1 where a
    feature fired fewer than ``m`` times."""

    def __init__(self, d: int, m: int = 5, device: str | torch.device = "cpu"):
        self.m = m
        self.values = torch.full((m, d), -torch.inf, device=device)
        self.tokens = torch.full((m, d), -1, dtype=torch.int64, device=device)
        self.rows = torch.full((m, d), -1, dtype=torch.int64, device=device)

    def update(self, codes: Codes | torch.Tensor, tokens_N: torch.Tensor, rows_N: torch.Tensor | None = None) -> None:
        """Merge one batch (``Codes`` or dense ``[n, S]``; ``tokens_N`` its token ids, ``rows_N``
        its rows in the stream, default ``0..n-1``). Only the active entries above a feature's
        current m-th best are looked at, so after the first batches a batch costs little more
        than one comparison per active entry."""
        if isinstance(codes, Codes):
            n = codes.n
            keep = codes.vals > self.values[-1][codes.cols]
            rows, cols, vals = codes.rows[keep], codes.cols[keep], codes.vals[keep]
        else:  # dense (pre-activations): only the nonzero entries above each feature's m-th best
            n = codes.shape[0]
            rows, cols = ((codes != 0) & (codes > self.values[-1])).nonzero(as_tuple=True)
            vals = codes[rows, cols]
        if rows_N is None:
            rows_N = torch.arange(n)
        if not rows.numel():
            return
        touched = torch.unique(cols)
        vals = torch.cat([self.values[:, touched].reshape(-1), vals.float()])
        feats = torch.cat([touched.repeat(self.m), cols])
        toks = torch.cat([self.tokens[:, touched].reshape(-1), tokens_N.to(cols.device)[rows]])
        where = torch.cat([self.rows[:, touched].reshape(-1), rows_N.to(cols.device)[rows]])
        order = torch.argsort(vals, descending=True, stable=True)
        order = order[torch.argsort(feats[order], stable=True)]  # by feature, highest first within one
        f = feats[order]
        _, counts = torch.unique_consecutive(f, return_counts=True)
        rank = torch.arange(f.numel(), device=f.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts,
                                                                                 counts)
        top = rank < self.m  # every touched feature brings its m current entries, so ranks 0..m-1 exist
        self.values[rank[top], f[top]] = vals[order][top]
        self.tokens[rank[top], f[top]] = toks[order][top]
        self.rows[rank[top], f[top]] = where[order][top]

    def sets(self) -> list[set[int]]:
        """Per feature: the distinct tokens of its top activations that are above 0."""
        fired = (self.values > 0).cpu()
        toks = self.tokens.cpu()
        return [set(toks[fired[:, s], s].tolist()) for s in range(toks.shape[1])]
