"""Data-parallel SAE training over ``torch.distributed`` (``torchrun --nproc-per-node N``).

Each of the N ranks holds a full copy of the SAE and its optimizer and trains on its own part of
every global batch: ``batch_size / N`` rows read from its own shards of the store
(``sae.data.shard_batches``). A step is then exactly the single-process step on the
concatenation of the ranks' parts, in rank order (``tests/training/test_distributed.py`` checks this):

- Gradients: each rank's loss is its share of the global loss (the MSE and the architecture's
  term weighted by its fraction of the batch, AuxK summed over its rows of the global AuxK rows
  and divided by their global count and variance), and the gradients are summed over ranks with
  one ``all_reduce`` per parameter. That is DDP's gradient averaging, done explicitly so that the
  sparse kernels, the decoder-gradient projection and AuxK keep their own code; every rank then
  takes the same Adam step.
- BatchTopK's batch-wide cut (also inside the Sampled-SAE's pool): each rank keeps its own top
  k * B_global positive values (no value outside them can be in the global top k * B_global), the
  ranks **all-gather these candidate values**, and every rank finds the same global cut-off (the
  k * B_global-th largest) in the gathered values; ties at the cut go to the lowest rank, then the
  lowest flat index, as in one process.
- The Sampled-SAE's column scores: the per-column sums they are made of (sum of squares for L2;
  mass and sum a log a for entropy) are **all-reduced** before the scores are formed, so every
  rank scores the global batch and draws the same pool (from the same seeded generator).
- The BatchTopK threshold (EMA of the smallest kept value): the minimum is all-reduced.
- Dead-latent counters: the "fired" masks are all-reduced (max), so every rank counts alike.

The collectives inside the SAE's rule run while a ``collective(dp)`` block is open (the trainer
opens one around its steps); outside it every function here is the identity, so the single
process path is untouched. Initialisation runs on the gathered first batches, identically on
every rank. Checkpoints are written by rank 0 and hold no per-rank state, so a run resumes on
any number of ranks.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch

from sae_core.errors import SAECoreError


class DistributedError(SAECoreError):
    """A data-parallel run that cannot start or that lost one of its ranks."""


@dataclass(frozen=True)
class DataParallel:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()


_ACTIVE: DataParallel | None = None


def active() -> DataParallel | None:
    """The data-parallel group whose collectives are on now (inside ``collective``), else None."""
    return _ACTIVE


@contextmanager
def collective(dp: DataParallel | None) -> Iterator[None]:
    """Within the block, the SAE rules reduce over the ranks of ``dp`` (None: nothing changes)."""
    global _ACTIVE
    before, _ACTIVE = _ACTIVE, dp
    try:
        yield
    finally:
        _ACTIVE = before


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str | None, timeout_s: float = 1800.0) -> DataParallel | None:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``): NCCL on CUDA, gloo on the CPU. None when not launched.

    ``device``: ``cpu``, ``cuda`` (this rank takes ``cuda:LOCAL_RANK``) or None (CUDA when there
    is one). Checked before the group is joined, so a bad device fails on every rank at once.
    """
    if not launched():
        return None
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    want = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if want.type == "cuda":
        if not torch.cuda.is_available():
            raise DistributedError(f"--device {device} under torchrun, but this machine has no CUDA device torch "
                                   "can use; pass --device cpu (gloo) or run on a GPU machine")
        if local >= torch.cuda.device_count():
            raise DistributedError(f"rank {rank} is local rank {local}, but this node has "
                                   f"{torch.cuda.device_count()} CUDA device(s); use at most that many "
                                   "--nproc-per-node")
        want = torch.device("cuda", local)
        torch.cuda.set_device(want)
    elif want.type != "cpu":
        raise DistributedError(f"--device {device}: data-parallel training runs on cpu or cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if want.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))
    return DataParallel(rank, world, want)


def shutdown(clean: bool = True) -> None:
    """Leave the process group. ``clean`` (this rank finished its work): wait for the others
    first, so that no rank tears down the rendezvous store while another still talks to it (that
    aborted about every second 2-rank run at exit). After an error, leave at once: the others may
    be waiting in another collective, and the launcher stops them when this rank exits."""
    import torch.distributed as dist

    if dist.is_initialized():
        if clean:
            try:
                dist.barrier()
            except RuntimeError:  # another rank is gone already: nothing to wait for
                pass
        dist.destroy_process_group()


@contextmanager
def joined(device: str | None) -> Iterator[DataParallel | None]:
    """``init_from_env(device)`` for the block, then ``shutdown`` (clean unless it raised)."""
    dp = init_from_env(device)
    try:
        yield dp
    except BaseException:
        shutdown(clean=False)
        raise
    shutdown()


# --- collectives (identity outside a ``collective`` block) -----------------------------------

def all_sum_(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over the ranks, in place."""
    if _ACTIVE is not None:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def all_max_(t: torch.Tensor) -> torch.Tensor:
    if _ACTIVE is not None:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def all_min_(t: torch.Tensor) -> torch.Tensor:
    if _ACTIVE is not None:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


def world() -> int:
    return _ACTIVE.world if _ACTIVE is not None else 1


def gather_rows(x_ND: torch.Tensor, dp: DataParallel | None) -> torch.Tensor:
    """The ranks' equal-sized ``x_ND`` concatenated in rank order (``x_ND`` itself without ``dp``)."""
    if dp is None:
        return x_ND
    import torch.distributed as dist

    parts = [torch.empty_like(x_ND) for _ in range(dp.world)]
    dist.all_gather(parts, x_ND.contiguous())
    return torch.cat(parts)


def sum_grads_(params) -> None:
    """Sum every parameter's gradient over the ranks (a missing gradient counts as zero)."""
    if _ACTIVE is None:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        all_sum_(p.grad)


def global_cut(vals_C: torch.Tensor, k_global: int) -> torch.Tensor:
    """Mask over this rank's candidate values ``vals_C`` (positive, in flat-index order, at most
    ``k_global`` of them: its own top ``k_global``) of those the global top ``k_global`` keeps.

    The candidates are all-gathered (zero-padded to ``k_global``); the cut-off ``t`` is the
    ``k_global``-th largest positive value of all of them, the same on every rank. Values equal to
    ``t`` fill the remaining slots from rank 0 on, each rank's lowest indices first."""
    import torch.distributed as dist

    dp = _ACTIVE
    padded = vals_C.new_zeros(k_global)
    padded[:vals_C.numel()] = vals_C
    parts = [torch.empty_like(padded) for _ in range(dp.world)]
    dist.all_gather(parts, padded)
    all_WK = torch.stack(parts)
    pos = all_WK[all_WK > 0]
    if pos.numel() <= k_global:  # every positive value of the global batch is kept
        return torch.ones_like(vals_C, dtype=torch.bool)
    t = pos.kthvalue(pos.numel() - k_global + 1).values
    gt_W, eq_W = (all_WK > t).sum(1), (all_WK == t).sum(1)
    mine = (k_global - gt_W.sum() - eq_W[:dp.rank].sum()).clamp(0, eq_W[dp.rank])
    eq = vals_C == t
    return (vals_C > t) | (eq & (eq.cumsum(0) <= mine))
