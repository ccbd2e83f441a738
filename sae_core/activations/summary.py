"""Summary statistics of an activation store: what the Activations page plots.

Everything is computed in float64 one shard (and at most ``CHUNK_ROWS`` rows) at a time, so a
store of millions of tokens is summarised without ever being whole in memory, and the per-token
norms are reduced to a histogram here rather than shipped whole to the browser.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

CHUNK_ROWS = 65_536  # rows converted to float64 at a time: 65k x 4096 dims is 2 GiB at worst


@dataclass(frozen=True)
class StoreSummary:
    """Per-token norm distribution and per-dimension moments of ``acts [n_tokens, d]``."""

    n_tokens: int
    d: int
    norm_counts: np.ndarray  # [bins] tokens whose L2 norm falls in each bin
    norm_edges: np.ndarray  # [bins + 1] bin edges of the norm histogram
    norm_mean: float
    norm_std: float
    mean_D: np.ndarray  # [d] mean of each dimension over tokens
    std_D: np.ndarray  # [d] population standard deviation (ddof=0) of each dimension

    @property
    def norm_centers(self) -> np.ndarray:
        """[bins] the middle of each norm bin (where a bar chart puts its bars)."""
        return (self.norm_edges[:-1] + self.norm_edges[1:]) / 2


def summarize_chunks(chunks: Iterable, bins: int = 60) -> StoreSummary:
    """Summarise activations given as consecutive row blocks ``[n_i, d]`` (numpy or torch)."""
    sum_D = sumsq_D = None
    norms = []
    for chunk in chunks:
        for start in range(0, len(chunk), CHUNK_ROWS):
            x = _to_numpy(chunk[start:start + CHUNK_ROWS]).astype(np.float64)
            if sum_D is None:
                sum_D, sumsq_D = np.zeros(x.shape[1]), np.zeros(x.shape[1])
            sum_D += x.sum(axis=0)
            sumsq_D += np.square(x).sum(axis=0)
            norms.append(np.linalg.norm(x, axis=1))
    norms_N = np.concatenate(norms) if norms else np.empty(0)
    n = len(norms_N)
    if n == 0:
        raise ValueError("cannot summarise an empty activation array (0 tokens)")
    mean_D = sum_D / n
    # E[x^2] - E[x]^2 in float64; clipped because rounding can make a constant column slightly < 0
    std_D = np.sqrt(np.clip(sumsq_D / n - np.square(mean_D), 0.0, None))
    counts, edges = np.histogram(norms_N, bins=bins)
    return StoreSummary(n_tokens=n, d=len(mean_D), norm_counts=counts, norm_edges=edges,
                        norm_mean=float(norms_N.mean()), norm_std=float(norms_N.std()),
                        mean_D=mean_D, std_D=std_D)


def summarize_activations(acts_ND, bins: int = 60) -> StoreSummary:
    """Summarise one array of activations ``[n_tokens, d]`` (numpy or torch)."""
    return summarize_chunks([acts_ND], bins=bins)


def summarize_store(store, bins: int = 60) -> StoreSummary:
    """Summarise an ``ActivationStore`` one shard at a time (never the whole store in memory).

    Anything with ``read_all() -> [n_tokens, d]`` works too (a store without shards).
    """
    if hasattr(store, "read_shard") and hasattr(store, "shard_rows"):
        chunks = (store.read_shard(i)[0] for i in range(len(store.shard_rows)))
        return summarize_chunks(chunks, bins=bins)
    return summarize_activations(store.read_all(), bins=bins)


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    # a torch tensor: bf16/fp16 have no numpy twin, so widen to float32 on the CPU first
    return x.detach().to("cpu").float().numpy()
