"""Per-feature statistics kept while streaming over tokens, in memory that does not grow with them.

``ExampleBank`` keeps, for every feature, the ``size`` entries with the highest score seen so
far, each with its token position and the feature's activations on a window of tokens around it.
With score = activation it is the streaming top-k of activating examples; with score = a hash of
(position, feature) it is a uniform reservoir sample of the feature's nonzero activations
(bottom-k sampling with a deterministic key, so a resumed build draws exactly the same sample and
a test can recompute it by brute force).

``StreamingHistogram`` counts each feature's nonzero activations in ``n_bins`` bins of equal width
``w_f`` starting at 0: bin j is [j w_f, (j+1) w_f). w_f is always the smallest power of two with
max_f < w_f * n_bins (so at least half the bins are in use): the first values set it, and when a
larger value arrives, adjacent bins are merged pairwise and w_f doubles, which is exact (bins of
width 2w start at multiples of 2w). So the final edges ``w_f * arange(n_bins + 1)`` depend on the
maximum only, not on batching, and the counts equal ``numpy.histogram`` with those edges.

Tie rule of the banks: higher score first, then the earlier token (lower global index), the order
a brute-force "sort all tokens by value" gives.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

_EMPTY = -1


class Candidates(NamedTuple):
    """Nonzero entries of one batch offered to a bank; all ``[M]`` except ``window_MW``."""
    feature_M: torch.Tensor  # int64
    score_M: torch.Tensor    # float32 (activation, or sampling key)
    value_M: torch.Tensor    # float32 activation
    gidx_M: torch.Tensor     # int64 global token index = sequence * context + position
    window_MW: torch.Tensor  # float32 activations of the feature on the window around the token


class ExampleBank:
    """The ``size`` best-scoring entries per feature (see the module doc)."""

    def __init__(self, n_features: int, size: int, window: int):
        self.n_features, self.size, self.window = n_features, size, window
        self.score_SK = torch.full((n_features, size), float("-inf"))
        self.value_SK = torch.zeros(n_features, size)
        self.gidx_SK = torch.full((n_features, size), _EMPTY, dtype=torch.int64)
        self.window_SKW = torch.zeros(n_features, size, window)

    def threshold(self, feature_M: torch.Tensor) -> torch.Tensor:
        """The score an entry of ``feature_M`` must beat to enter (the current last kept score)."""
        return self.score_SK[feature_M, -1]

    def update(self, c: Candidates) -> None:
        """Merge candidates (already filtered by ``threshold`` or not: both are correct)."""
        if c.feature_M.numel() == 0:
            return
        touched_F = torch.unique(c.feature_M)
        K = self.size
        feat = torch.cat([touched_F.repeat_interleave(K), c.feature_M])
        score = torch.cat([self.score_SK[touched_F].reshape(-1), c.score_M])
        value = torch.cat([self.value_SK[touched_F].reshape(-1), c.value_M])
        gidx = torch.cat([self.gidx_SK[touched_F].reshape(-1), c.gidx_M])
        window = torch.cat([self.window_SKW[touched_F].reshape(-1, self.window), c.window_MW])
        # One stable sort by (feature, score descending). Ties keep their order in ``feat``: the
        # bank's own entries (already earlier-token-first among equal scores) come before the
        # candidates, which arrive in token order, so ties resolve to the earlier token. Empty
        # slots (score -inf) sort last.
        order = torch.argsort(_feature_score_key(feat, score), stable=True)
        feat_sorted = feat[order]
        group_start = torch.searchsorted(feat_sorted, feat_sorted, right=False)
        rank = torch.arange(feat_sorted.numel()) - group_start
        keep = rank < K
        rows, slots, src = feat_sorted[keep], rank[keep], order[keep]
        self.score_SK[rows, slots] = score[src]
        self.value_SK[rows, slots] = value[src]
        self.gidx_SK[rows, slots] = gidx[src]
        self.window_SKW[rows, slots] = window[src]

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.score": self.score_SK, f"{prefix}.value": self.value_SK,
                f"{prefix}.gidx": self.gidx_SK, f"{prefix}.window": self.window_SKW}

    def load_state(self, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
        self.score_SK = tensors[f"{prefix}.score"].clone()
        self.value_SK = tensors[f"{prefix}.value"].clone()
        self.gidx_SK = tensors[f"{prefix}.gidx"].clone()
        self.window_SKW = tensors[f"{prefix}.window"].clone()


def _feature_score_key(feature_M: torch.Tensor, score_M: torch.Tensor) -> torch.Tensor:
    """int64 keys ordering by feature, then by float32 score descending (IEEE bits made monotone)."""
    bits = (-score_M.float()).view(torch.int32).long()
    monotone = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + (1 << 31)  # in [0, 2^32)
    return feature_M * (1 << 32) + monotone


def sample_keys(gidx_M: torch.Tensor, feature_M: torch.Tensor, seed: int) -> torch.Tensor:
    """Deterministic pseudo-random keys in [0, 1) for (token, feature) pairs (splitmix64 finaliser).

    int64 arithmetic wraps around in torch, which is what the hash wants; the top 24 bits become a
    float32 in [0, 1) exactly.
    """
    x = gidx_M * 0x9E3779B1 + feature_M * 0x85EBCA77 + seed * 0xC2B2AE3D
    x = x ^ (x >> 30)
    x = x * -4658895280553007687  # 0xbf58476d1ce4e5b9 as a signed int64
    x = x ^ (x >> 27)
    x = x * -7723592293110705685  # 0x94d049bb133111eb
    x = x ^ (x >> 31)
    return ((x >> 40) & 0xFFFFFF).to(torch.float32) / float(1 << 24)


class StreamingHistogram:
    """Exact per-feature histograms of nonzero activations with doubling bin widths (module doc)."""

    def __init__(self, n_features: int, n_bins: int):
        if n_bins < 2 or n_bins % 2:  # pairwise merging needs an even count
            raise ValueError(f"n_bins must be an even number >= 2, got {n_bins}")
        self.n_bins = n_bins
        self.counts_SH = torch.zeros(n_features, n_bins, dtype=torch.int64)
        self.width_S = torch.zeros(n_features, dtype=torch.float64)

    def update(self, feature_M: torch.Tensor, value_M: torch.Tensor) -> None:
        if feature_M.numel() == 0:
            return
        H = self.n_bins
        v = value_M.double()
        vmax_S = torch.zeros_like(self.width_S).scatter_reduce(0, feature_M, v, "amax")
        new = (self.width_S == 0) & (vmax_S > 0)
        # the smallest power of two w with vmax < w * H (frexp: x = m 2^e, m in [0.5, 1) -> 2^e)
        self.width_S[new] = torch.ldexp(torch.ones(()), torch.frexp(vmax_S[new] / H).exponent.double())
        grow = (vmax_S > 0) & (vmax_S >= self.width_S * H)
        while bool(grow.any()):
            rows = grow.nonzero().squeeze(1)
            merged = self.counts_SH[rows].view(-1, H // 2, 2).sum(-1)
            self.counts_SH[rows] = torch.cat([merged, torch.zeros_like(merged)], dim=1)
            self.width_S[rows] *= 2
            grow = (vmax_S > 0) & (vmax_S >= self.width_S * H)
        bin_M = torch.floor(v / self.width_S[feature_M]).long().clamp_(0, H - 1)
        self.counts_SH.view(-1).index_add_(0, feature_M * H + bin_M, torch.ones_like(bin_M))

    def edges(self, feature: int) -> torch.Tensor:
        return self.width_S[feature] * torch.arange(self.n_bins + 1, dtype=torch.float64)

    def state(self) -> dict[str, torch.Tensor]:
        return {"hist.counts": self.counts_SH, "hist.width": self.width_S}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.counts_SH = tensors["hist.counts"].clone()
        self.width_S = tensors["hist.width"].clone()
