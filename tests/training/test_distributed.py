"""Data-parallel training (issue #15): 2 gloo ranks on the CPU train exactly what one process
trains on the same global batches (each global batch = the ranks' parts in rank order).

The ranks are spawned processes (``torch.multiprocessing``) that join a gloo group on a free
local port; everything runs in float64 so that the batch-wide selections (BatchTopK's cut, the
Sampled-SAE's pool) cannot flip on rounding between the two schedules."""
import os

import pytest
import torch
import torch.multiprocessing as mp

from sae_core.sae import SAEConfig
from sae_core.training.data import EpochBatches, memory_batches
from sae_core.training.loop import TrainerConfig, train_sae
from tests.helpers import free_port, planted

pytestmark = pytest.mark.slow  # spawns gloo process groups

WORLD = 2
BATCH = 256
CFGS = [
    SAEConfig(arch="batchtopk", d_in=16, d_sae=128, k=4, dtype="float64"),
    SAEConfig(arch="topk", d_in=16, d_sae=128, k=4, dtype="float64"),
    SAEConfig(arch="sampled", d_in=16, d_sae=128, k=4, l=4.0, scoring="l2", dtype="float64"),
    SAEConfig(arch="sampled", d_in=16, d_sae=128, k=4, l=2.0, scoring="entropy", pool_rule="sample",
              dtype="float64"),
    SAEConfig(arch="relu", d_in=16, d_sae=64, l1_coeff=1.0, dtype="float64"),
]
# AuxK on (short dead window) and a quarter of the rows for it: the global draw of AuxK rows
TCFG = TrainerConfig(total_tokens=BATCH * 30, batch_size=BATCH, lr=3e-3, warmup_steps=3, dead_tokens=BATCH * 2,
                     seed=5, device="cpu")


def _data() -> torch.Tensor:
    return (planted(4096, d_in=16, n_true=40, per_token=3)[0] + 0.2).double()


def rank_part(source: EpochBatches, rank: int, world: int) -> EpochBatches:
    """Rank ``rank``'s rows of every global batch of ``source``."""
    def make(seed, start):
        for x in source(seed, start):
            b = x.shape[0] // world
            yield x[rank * b:(rank + 1) * b]
    return EpochBatches(make, source.per_epoch)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from sae_core import distributed

    with distributed.joined("cpu") as dp:
        source = rank_part(memory_batches(_data(), BATCH), rank, world)
        for i, cfg in enumerate(CFGS):
            result = train_sae(source, cfg, TCFG, dp=dp)
            if rank == 0 or cfg.arch == "sampled":  # every rank ends with the same SAE: check one
                torch.save({"state": result.sae.state_dict(), "history": [h._asdict() for h in result.history]},
                           os.path.join(out_dir, f"{i}-{rank}.pt"))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(WORLD, free_port(), str(out)), nprocs=WORLD, start_method="spawn")
    return {p.stem: torch.load(p) for p in out.glob("*.pt")}


@pytest.mark.parametrize("i", range(len(CFGS)), ids=[c.label for c in CFGS])
def test_two_gloo_ranks_train_what_one_process_trains(two_ranks, i):
    cfg = CFGS[i]
    alone = train_sae(memory_batches(_data(), BATCH), cfg, TCFG)
    got = two_ranks[f"{i}-0"]
    assert len(got["history"]) == TCFG.steps
    for name, want in alone.sae.state_dict().items():
        torch.testing.assert_close(got["state"][name], want, rtol=1e-7, atol=1e-9, msg=name)
    for h_ddp, h in zip(got["history"], alone.history):  # the logged numbers are the global batch's
        for key in ("loss", "sq_err", "aux", "l0", "aux_dead_fraction"):
            assert h_ddp[key] == pytest.approx(getattr(h, key), rel=1e-7, abs=1e-12), (h.step, key)
    if cfg.arch == "batchtopk":
        assert any(h.aux > 0 for h in alone.history)  # AuxK ran, so its global form was checked
    if f"{i}-1" in two_ranks:  # the other rank holds the very same SAE
        for name, v in got["state"].items():
            assert torch.equal(two_ranks[f"{i}-1"]["state"][name], v), name
