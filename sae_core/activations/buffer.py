"""Shuffling reader: training batches from an ``ActivationStore`` without loading it whole.

Per epoch: shards are visited in a seeded random order and loaded a group at a time, up to
``buffer_tokens`` rows (at least one shard). Each group, plus the rows left over from the previous
group, is permuted and cut into batches; the remainder (< ``batch_size`` rows) carries over into
the next group. So every row is yielded exactly once per epoch, and adjacent rows of one document
are scattered across batches (they are strongly correlated; SAE training wants them apart).

The last batch of an epoch holds the remaining ``n_tokens % batch_size`` rows and is yielded
as a smaller batch unless ``drop_last=True`` (then those rows are skipped for that epoch).

``rows=(lo, hi)`` reads only store rows lo..hi-1 (a training or held-out range). ``start=s``
yields the same stream minus its first s batches, and reads no shard whose batches all come
before s: the shuffle is drawn on row numbers, which need no data, and only the few rows carried
into the first group that yields are read from earlier shards. A resumed training run skips what
it used this way instead of reading it again.
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


def _spans(store: ActivationStore, lo: int, hi: int) -> list[tuple[int, int, int, int]]:
    """``(shard, first row, end row, shard's first row)`` in store row numbers, for each shard's
    part of [lo, hi)."""
    spans, start = [], 0
    for i, n in enumerate(store.shard_rows):
        a, b = max(lo, start), min(hi, start + n)
        if a < b:
            spans.append((i, a, b, start))
        start += n
    return spans


def read_rows(store: ActivationStore, ids: torch.Tensor) -> torch.Tensor:
    """``[len(ids), d]`` float32: the store's rows ``ids`` (any order), each shard read once."""
    out = torch.empty(ids.shape[0], store.d)
    if not ids.numel():
        return out
    ends = torch.tensor(store.shard_rows).cumsum(0)
    shard_of = torch.searchsorted(ends, ids, right=True)
    for s in shard_of.unique().tolist():
        at = (shard_of == s).nonzero().squeeze(1)
        first = int(ends[s]) - store.shard_rows[s]
        out[at] = store.read_shard(s)[0][ids[at] - first]
    return out


def iter_batches(store: ActivationStore, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 epochs: int = 1, buffer_tokens: int = 2**18, device: str | torch.device = "cpu",
                 drop_last: bool = False, rows: tuple[int, int] | None = None,
                 start: int = 0, shards: list[int] | None = None) -> Iterator[torch.Tensor]:
    """Yield ``[batch_size, d]`` float32 batches (the epoch's last may be smaller, see module doc).

    Deterministic for a given ``seed``; ``shuffle=False`` reads rows in store order. ``rows`` and
    ``start``: see the module doc (``start`` counts batches over all epochs). ``shards``: read
    only these shards' rows (of ``rows``): a data-parallel rank's own part of the store.
    """
    lo, hi = rows if rows is not None else (0, store.n_tokens)
    if batch_size <= 0 or epochs < 0 or buffer_tokens <= 0 or start < 0:
        raise SAECoreError(f"batch_size ({batch_size}) and buffer_tokens ({buffer_tokens}) must be "
                           f"positive and epochs ({epochs}) and start ({start}) non-negative")
    if not 0 <= lo <= hi <= store.n_tokens:
        raise SAECoreError(f"rows={rows} is not a range of the store's {store.n_tokens} rows")
    spans = [sp for sp in _spans(store, lo, hi) if shards is None or sp[0] in shards]
    gen = torch.Generator().manual_seed(seed)
    done = 0  # batches of the stream so far, yielded or skipped

    def pool_of(carry_ND, carry_ids, group):
        parts = [carry_ND if carry_ND is not None else read_rows(store, carry_ids)]
        for j in group:
            s, a, b, first = spans[j]
            parts.append(store.read_shard(s)[0][a - first:b - first])
        return torch.cat(parts)

    for _ in range(epochs):
        order = torch.randperm(len(spans), generator=gen).tolist() if shuffle else list(range(len(spans)))
        carry_ND, carry_ids = torch.empty(0, store.d), torch.empty(0, dtype=torch.long)
        for group in _shard_groups([b - a for _, a, b, _ in spans], order, buffer_tokens):
            ids = torch.cat([carry_ids] + [torch.arange(spans[j][1], spans[j][2]) for j in group])
            perm = torch.randperm(ids.shape[0], generator=gen) if shuffle else None
            n_full = ids.shape[0] // batch_size
            if done + n_full <= start:  # every batch of this group comes before start: no read
                ids = ids[perm] if shuffle else ids
                carry_ND, carry_ids = None, ids[n_full * batch_size:]
                done += n_full
                continue
            pool_ND = pool_of(carry_ND, carry_ids, group)
            if shuffle:
                pool_ND, ids = pool_ND[perm], ids[perm]
            for s in range(0, n_full * batch_size, batch_size):
                if done >= start:
                    yield pool_ND[s:s + batch_size].to(device)
                done += 1
            carry_ND, carry_ids = pool_ND[n_full * batch_size:], ids[n_full * batch_size:]
        if carry_ids.shape[0] and not drop_last:
            if done >= start:
                yield (carry_ND if carry_ND is not None else read_rows(store, carry_ids)).to(device)
            done += 1
