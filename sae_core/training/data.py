"""What an SAE trains and is evaluated on: an activation store's rows, split into training rows and
held-out rows (the store's last ``eval_fraction``; stores are written in corpus order, so these
come from documents the SAE never saw). ``open_split`` holds them in memory when the store fits the
memory budget, and streams them from disk when it does not, so a store of any size trains:

- ``MemorySplit``: every row in RAM; each epoch is a fresh seeded permutation of the training rows.
- ``StreamSplit``: ``iter_batches`` over the training rows, one shuffle buffer at a time; held-out
  rows are read in order at evaluation.

Both hand the trainer an ``EpochBatches``: batches of epoch ``seed`` from the ``start``-th on, and
how many full batches an epoch has, so a resumed run skips what it used without reading it again.
Only torch is imported at module level (the store reader is imported when a store is opened).

Memory budget: ``SAE_STUDIO_MEMORY_BUDGET_GB`` in the environment, else a quarter of the machine's
RAM and at most 4 GiB; a store whose float32 rows exceed it is streamed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import torch

from sae_core.errors import SAECoreError

if TYPE_CHECKING:
    from sae_core.activations import ActivationStore

MEMORY_BUDGET_ENV = "SAE_STUDIO_MEMORY_BUDGET_GB"
SHUFFLE_BUFFER_BYTES = 256 * 2**20  # a streamed shuffle buffer (float32 rows), at most 2**18 rows


def memory_budget() -> int:
    """Bytes of activations a split may hold in memory (see the module doc)."""
    raw = os.environ.get(MEMORY_BUDGET_ENV)
    if raw is not None:
        try:
            gb = float(raw)
        except ValueError:
            gb = -1.0
        if not gb >= 0:
            raise SAECoreError(f"{MEMORY_BUDGET_ENV}={raw!r}; give a number of GB >= 0 (0 streams every store)")
        return int(gb * 2**30)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 16 * 2**30
    return min(4 * 2**30, ram // 4)


@dataclass(frozen=True)
class EpochBatches:
    """A trainer's batch source: ``source(seed, start)`` yields epoch ``seed``'s batches of raw
    activations from the ``start``-th on; every epoch has ``per_epoch`` of them, all full."""
    make: Callable[[int, int], Iterator[torch.Tensor]]
    per_epoch: int

    def __call__(self, seed: int, start: int = 0) -> Iterator[torch.Tensor]:
        return self.make(seed, start)


def memory_batches(x_ND: torch.Tensor, batch_size: int) -> EpochBatches:
    """Full batches of ``x_ND`` rows, a fresh seeded permutation each epoch (the tail is dropped)."""
    def make(seed: int, start: int) -> Iterator[torch.Tensor]:
        perm = torch.randperm(x_ND.shape[0], generator=torch.Generator().manual_seed(seed))
        for s in range(start * batch_size, x_ND.shape[0] - batch_size + 1, batch_size):
            yield x_ND[perm[s:s + batch_size]]
    return EpochBatches(make, x_ND.shape[0] // batch_size)


def n_eval_rows(n: int, eval_fraction: float) -> int:
    """How many of ``n`` rows are held out for evaluation (the last ones)."""
    if not 0 < eval_fraction < 1:
        raise SAECoreError(f"eval_fraction={eval_fraction}; choose a fraction between 0 and 1")
    if n < 2:
        raise SAECoreError(f"the activations hold {n} rows; training needs many more (harvest more tokens)")
    return max(1, int(n * eval_fraction))


@dataclass(frozen=True)
class MemorySplit:
    """Training rows and held-out rows, in memory."""
    train_ND: torch.Tensor
    eval_ND: torch.Tensor

    @classmethod
    def from_store(cls, store: "ActivationStore", eval_fraction: float = 0.1) -> "MemorySplit":
        acts = store.read_all()
        n_eval = n_eval_rows(acts.shape[0], eval_fraction)
        return cls(acts[:-n_eval], acts[-n_eval:])

    @property
    def n_eval(self) -> int:
        return self.eval_ND.shape[0]

    def batches(self, batch_size: int) -> EpochBatches:
        return memory_batches(self.train_ND, batch_size)

    def eval_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        for s in range(0, self.eval_ND.shape[0], batch_size):
            yield self.eval_ND[s:s + batch_size]


@dataclass(frozen=True)
class StreamSplit:
    """Training rows ``[0, n_train)`` and held-out rows ``[n_train, n_tokens)`` of a store on disk."""
    store: "ActivationStore"
    n_train: int

    @classmethod
    def from_store(cls, store: "ActivationStore", eval_fraction: float = 0.1) -> "StreamSplit":
        return cls(store, store.n_tokens - n_eval_rows(store.n_tokens, eval_fraction))

    @property
    def n_eval(self) -> int:
        return self.store.n_tokens - self.n_train

    @property
    def buffer_tokens(self) -> int:
        return max(1, min(2**18, SHUFFLE_BUFFER_BYTES // (4 * self.store.d)))

    def batches(self, batch_size: int) -> EpochBatches:
        from sae_core.activations import iter_batches

        def make(seed: int, start: int) -> Iterator[torch.Tensor]:
            return iter_batches(self.store, batch_size, seed=seed, rows=(0, self.n_train), start=start,
                                drop_last=True, buffer_tokens=max(batch_size, self.buffer_tokens))
        return EpochBatches(make, self.n_train // batch_size)

    def eval_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        from sae_core.activations import iter_batches

        return iter_batches(self.store, batch_size, shuffle=False, rows=(self.n_train, self.store.n_tokens),
                            buffer_tokens=max(batch_size, self.buffer_tokens))


Split = MemorySplit | StreamSplit


def rank_shards(store: "ActivationStore", n_train: int, world: int) -> list[list[int]]:
    """The shards each of ``world`` data-parallel ranks reads: of the shards holding training rows
    (rows < ``n_train``), rank r takes shards r, r + world, ...; ``SAECoreError`` when there are
    fewer such shards than ranks."""
    train = [i for i, start in enumerate(_starts(store.shard_rows)) if start < n_train]
    if len(train) < world:
        raise SAECoreError(
            f"the store has {len(train)} shard(s) of training rows but {world} ranks were started, and each "
            f"rank reads its own shards; use at most {len(train)} ranks (--nproc-per-node), or harvest "
            f"into smaller shards (sae-core harvest --shard-tokens {max(1, n_train // (2 * world))})")
    return [train[r::world] for r in range(world)]


def _starts(rows: list[int]) -> list[int]:
    out, at = [], 0
    for n in rows:
        out.append(at)
        at += n
    return out


def shard_batches(store: "ActivationStore", n_train: int, batch_size: int, rank: int, world: int) -> EpochBatches:
    """Rank ``rank``'s parts (``batch_size / world`` rows) of the global training batches: its own
    shards' training rows (``rank_shards``), shuffled per epoch and rank. The global batch is the
    ranks' parts in rank order. Every rank gets the same ``per_epoch``, the least over the ranks,
    so all of them start a new epoch together."""
    from sae_core.activations import iter_batches

    local = batch_size // world
    owned = rank_shards(store, n_train, world)
    starts = _starts(store.shard_rows)
    train_rows = [sum(max(0, min(n_train, starts[i] + store.shard_rows[i]) - starts[i]) for i in mine)
                  for mine in owned]
    per_epoch = min(n // local for n in train_rows)
    buffer_tokens = max(local, min(2**18, SHUFFLE_BUFFER_BYTES // (4 * store.d)))

    def make(seed: int, start: int) -> Iterator[torch.Tensor]:
        stream = iter_batches(store, local, seed=seed * 1_000_003 + rank, rows=(0, n_train), start=start,
                              drop_last=True, buffer_tokens=buffer_tokens, shards=owned[rank])
        for i, x in enumerate(stream, start):
            if i >= per_epoch:
                return
            yield x
    return EpochBatches(make, per_epoch)


def open_split(store: "ActivationStore", eval_fraction: float = 0.1, budget: int | None = None) -> Split:
    """The store's split: in memory when its float32 rows fit ``budget`` bytes (default
    ``memory_budget()``), else streamed."""
    budget = memory_budget() if budget is None else budget
    if store.n_tokens * store.d * 4 <= budget:
        return MemorySplit.from_store(store, eval_fraction)
    return StreamSplit.from_store(store, eval_fraction)
