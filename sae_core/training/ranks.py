"""A data-parallel training run seen from one rank: shards of a user's file that give every rank
rows, what it does when another rank is lost, and the fault hook the tests use to lose one on
purpose (README, "Scaling up")."""
from __future__ import annotations

import inspect
import os
import signal
from pathlib import Path
from typing import Callable, TypeVar

from sae_core.distributed import DataParallel, DistributedError
from sae_core.errors import SAECoreError
from sae_core.training.data import StreamSplit, n_eval_rows, rank_shards
from sae_core.workspace import Workspace

T = TypeVar("T")
FAIL_ENV = "SAE_STUDIO_FAIL_RANK_AT_STEP"  # "RANK:STEP": that rank's process dies there (fault tests)


# the held-out share of a data-parallel run's store (the split train_all_to_workspace opens)
EVAL_FRACTION = inspect.signature(StreamSplit.from_store).parameters["eval_fraction"].default


def rank_shard_tokens(n_rows: int, world: int, shard_tokens: int) -> int:
    """Rows per shard of an import of ``n_rows`` that ``world`` ranks will train on: at most
    ``shard_tokens``, and at most an equal share of the training rows, so that each rank reads at
    least one shard of them (``data.rank_shards``; the held-out tail is no rank's)."""
    n_train = n_rows - n_eval_rows(n_rows, EVAL_FRACTION)
    return max(1, min(shard_tokens, n_train // world))


def check_file_ranks(store, world: int, path: Path) -> None:
    """Before ``world`` ranks train on a user's file (imported by ``rank_shard_tokens``): each needs
    a shard of training rows, so a file with fewer training rows than ranks is an error that says
    what to change (fewer ranks or a larger file: its shards are already as small as they go)."""
    n_train = StreamSplit.from_store(store, EVAL_FRACTION).n_train
    try:
        rank_shards(store, n_train, world)
    except SAECoreError:
        raise DistributedError(
            f"--acts {path} holds {store.n_tokens:,} rows, {n_train:,} of them for training (the last "
            f"{EVAL_FRACTION:.0%} is held out): too few for {world} ranks, which each train on their own "
            f"rows; start at most {n_train} ranks (--nproc-per-node) or give a larger file") from None


def last_checkpoint(ws: Workspace) -> str | None:
    """The newest ``step-*`` checkpoint name among the workspace's jobs, or None."""
    steps = sorted(p.name for p in ws.checkpoints_root.glob("*/step-*"))
    return steps[-1] if steps else None


def guard_ranks(dp: DataParallel | None, ws: Workspace, fn: Callable[[], T]) -> T:
    """``fn()``; in a data-parallel run, losing another rank (a collective fails, or torchrun
    stops this rank with SIGTERM because another one died) becomes a ``DistributedError`` that
    says where the run can resume from."""
    if dp is None:
        return fn()

    def stopped(why: str) -> DistributedError:
        last = last_checkpoint(ws)
        where = f"the last checkpoint is {last}" if last else "no checkpoint was written yet"
        return DistributedError(
            f"rank {dp.rank} of {dp.world} stopped: {why}. {where} (under {ws.checkpoints_root}); run the "
            "same command again, on any number of ranks, to resume from it")

    def on_term(signum, frame):
        raise stopped("the launcher ended the run because another rank failed")
    before = signal.signal(signal.SIGTERM, on_term)
    try:
        return fn()
    except RuntimeError as e:  # gloo/NCCL: "Connection closed by peer", timeouts, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise stopped(f"another rank is gone ({first[:200]})") from None
    finally:
        signal.signal(signal.SIGTERM, before)


def follower_on_step(dp: DataParallel):
    """The trainer callback of a rank other than 0: nothing to show; it dies on purpose where
    ``$SAE_STUDIO_FAIL_RANK_AT_STEP`` says (how the tests kill a rank mid-run)."""
    fail = os.environ.get(FAIL_ENV, "")
    rank, _, step = fail.partition(":")

    def on_step(entry, total):
        if fail and int(rank) == dp.rank and entry.step == int(step):
            os._exit(17)
    return on_step
