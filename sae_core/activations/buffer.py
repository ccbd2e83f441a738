"""Shuffling reader: training batches from an ``ActivationStore`` without loading it whole.

Per epoch: shards are visited in a seeded random order and loaded a group at a time, up to
``buffer_tokens`` rows (at least one shard). Each group, plus the rows left over from the previous
group, is permuted and cut into batches; the remainder (< ``batch_size`` rows) carries over into
the next group. So every row is yielded exactly once per epoch, and adjacent rows of one document
are scattered across batches (they are strongly correlated; SAE training wants them apart).

The last batch of an epoch holds the remaining ``n_tokens % batch_size`` rows and is yielded
as a smaller batch unless ``drop_last=True`` (then those rows are skipped for that epoch).
"""
from __future__ import annotations

from typing import Iterator

import torch

from sae_core.activations.store import ActivationStore
from sae_core.errors import SAECoreError


def _shard_groups(rows_per_shard: list[int], order: list[int], buffer_tokens: int) -> list[list[int]]:
    """Consecutive runs of ``order`` whose rows fit in ``buffer_tokens`` (one shard at least)."""
    groups, cur, cur_rows = [], [], 0
    for i in order:
        if cur and cur_rows + rows_per_shard[i] > buffer_tokens:
            groups.append(cur)
            cur, cur_rows = [], 0
        cur.append(i)
        cur_rows += rows_per_shard[i]
    if cur:
        groups.append(cur)
    return groups


def iter_batches(store: ActivationStore, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 epochs: int = 1, buffer_tokens: int = 2**18, device: str | torch.device = "cpu",
                 drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Yield ``[batch_size, d]`` float32 batches (the epoch's last may be smaller, see module doc).

    Deterministic for a given ``seed``; ``shuffle=False`` reads rows in store order.
    """
    if batch_size <= 0 or epochs < 0 or buffer_tokens <= 0:
        raise SAECoreError(f"batch_size ({batch_size}) and buffer_tokens ({buffer_tokens}) must be "
                           f"positive and epochs ({epochs}) non-negative")
    rows = store.shard_rows
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(rows), generator=gen).tolist() if shuffle else list(range(len(rows)))
        carry_ND = torch.empty(0, store.d)
        for group in _shard_groups(rows, order, buffer_tokens):
            pool_ND = torch.cat([carry_ND] + [store.read_shard(i)[0] for i in group])
            if shuffle:
                pool_ND = pool_ND[torch.randperm(pool_ND.shape[0], generator=gen)]
            n_full = pool_ND.shape[0] // batch_size * batch_size
            for s in range(0, n_full, batch_size):
                yield pool_ND[s:s + batch_size].to(device)
            carry_ND = pool_ND[n_full:]
        if carry_ND.shape[0] and not drop_last:
            yield carry_ND.to(device)
