"""What a feature does, read off the weights alone: logit effects and nearest features.

- Logit effects: row f of ``W_dec @ W_U`` (``[d_sae, d_vocab]``), the direct effect of writing the
  feature's decoder direction into the residual stream on each token's logit. The index passes
  W_U with the final norm folded in and centred, as Neuronpedia's dashboards do
  (``sae_core.models.unembed``). Per feature: the ``n_top`` most promoted and most suppressed
  tokens, and a histogram of the whole row over ``n_bins`` equal bins from its min to its max
  (``numpy.histogram(row, n_bins)``). Per token: the ``n_top`` features that promote it most (for
  "search by a token a feature promotes").
- Nearest features: the ``n_nearest`` other features with the highest cosine between decoder rows.

Both go over features in chunks, so the ``[d_sae, d_vocab]`` and ``[d_sae, d_sae]`` matrices are
never held whole (16k x 50k floats would be 3 GB).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

CHUNK = 512  # rows per chunk: [512, d_vocab] float64 is 200 MB at a 50k vocabulary


class LogitEffects(NamedTuple):
    top_ids_SL: torch.Tensor      # most promoted tokens, descending
    top_vals_SL: torch.Tensor
    bottom_ids_SL: torch.Tensor   # most suppressed tokens, ascending (most negative first)
    bottom_vals_SL: torch.Tensor
    hist_counts_SH: torch.Tensor  # int64
    hist_range_S2: torch.Tensor   # [min, max] of each row: edges = linspace(min, max, H + 1)
    promoters_VN: torch.Tensor    # per token: features with the largest effect on it, descending
    promoter_vals_VN: torch.Tensor


def row_histograms(rows_CV: torch.Tensor, n_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``numpy.histogram(row, n_bins)`` of every row (in float64): counts ``[C, n_bins]``, ranges ``[C, 2]``.

    Follows numpy's rule: a first guess floor((v - lo) / (hi - lo) * n), then corrected against the
    edges ``lo + j * step`` (the last edge is ``hi`` and the last bin is closed).
    """
    rows = rows_CV.double()
    lo, hi = rows.min(dim=1, keepdim=True).values, rows.max(dim=1, keepdim=True).values
    flat = hi == lo  # numpy widens a zero range to [lo - 0.5, hi + 0.5]
    lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)
    step = (hi - lo) / n_bins
    bins = ((rows - lo) / (hi - lo) * n_bins).floor().long().clamp_(0, n_bins - 1)
    left = lo + bins * step
    right = torch.where(bins == n_bins - 1, hi, lo + (bins + 1) * step)
    bins = bins - (rows < left).long() + ((rows >= right) & (bins != n_bins - 1)).long()
    counts = torch.zeros(rows.shape[0], n_bins, dtype=torch.int64)
    counts.scatter_add_(1, bins, torch.ones_like(bins))
    return counts, torch.cat([lo, hi], dim=1)


@torch.no_grad()
def logit_effects(W_dec_SD: torch.Tensor, W_U_DV: torch.Tensor, n_top: int = 10, n_bins: int = 30,
                  n_promoters: int = 20) -> LogitEffects:
    S, V = W_dec_SD.shape[0], W_U_DV.shape[1]
    n_top, n_promoters = min(n_top, V), min(n_promoters, S)
    W_U = W_U_DV.detach().float().cpu()
    parts: dict[str, list] = {k: [] for k in ("ti", "tv", "bi", "bv", "hc", "hr")}
    best_vals = torch.full((V, n_promoters), float("-inf"))
    best_ids = torch.full((V, n_promoters), -1, dtype=torch.int64)
    for s in range(0, S, CHUNK):
        eff_CV = W_dec_SD[s:s + CHUNK].detach().float().cpu() @ W_U
        top = eff_CV.topk(n_top, dim=1)
        bottom = eff_CV.topk(n_top, dim=1, largest=False)
        counts, rng = row_histograms(eff_CV, n_bins)
        for key, t in zip(parts, (top.indices, top.values, bottom.indices, bottom.values, counts, rng)):
            parts[key].append(t)
        # running per-token top features: merge this chunk's best with the best so far
        chunk_top = eff_CV.T.topk(min(n_promoters, eff_CV.shape[0]), dim=1)
        vals = torch.cat([best_vals, chunk_top.values], dim=1)
        ids = torch.cat([best_ids, chunk_top.indices + s], dim=1)
        keep = vals.topk(n_promoters, dim=1)
        best_vals, best_ids = keep.values, ids.gather(1, keep.indices)
    cat = {k: torch.cat(v) for k, v in parts.items()}
    return LogitEffects(cat["ti"], cat["tv"], cat["bi"], cat["bv"], cat["hc"], cat["hr"],
                        best_ids, best_vals)


@torch.no_grad()
def nearest_features(W_dec_SD: torch.Tensor, n_nearest: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids [S, n]`` and cosines ``[S, n]`` of each feature's nearest other features, descending."""
    W = W_dec_SD.detach().float().cpu()
    W = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    S = W.shape[0]
    n = min(n_nearest, S - 1)
    ids, cos = [], []
    for s in range(0, S, CHUNK):
        sim_CS = W[s:s + CHUNK] @ W.T
        rows = torch.arange(sim_CS.shape[0])
        sim_CS[rows, rows + s] = float("-inf")  # not its own neighbour
        top = sim_CS.topk(n, dim=1)
        ids.append(top.indices)
        cos.append(top.values)
    return torch.cat(ids), torch.cat(cos)
