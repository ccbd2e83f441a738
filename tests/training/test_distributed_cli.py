"""``torchrun --nproc-per-node N -m sae_core.cli train ...`` end to end on the CPU (gloo), and its
bad inputs (issue #15): more ranks than shards, a rank that dies mid-run (the others stop with a
clear error, a rerun resumes from the last checkpoint), ``--device cuda`` without CUDA."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sae_core.activations import ActivationStore
from sae_core.training.data import EpochBatches, StreamSplit, shard_batches
from sae_core.sae.io import load_sae
from sae_core.training.job import checkpointed
from sae_core.training.loop import TrainerConfig, train_sae
from tests.helpers import planted, torchrun

pytestmark = pytest.mark.slow  # spawns torchrun

TRAIN = ["train", "--acts", "acts.npy", "--arch", "batchtopk", "--k", "4", "--d-sae", "128",
         "--tokens", "40960", "--batch-size", "512", "--device", "cpu"]


@pytest.fixture(scope="module")
def acts_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp_cli")
    x = (planted(24000, d_in=16, n_true=40, per_token=3)[0] + 0.2).numpy().astype(np.float32)
    np.save(d / "acts.npy", x)
    return d


def _only_sae(ws: Path) -> Path:
    (path,) = (ws / "sae").iterdir()
    return path


def test_two_ranks_train_what_one_process_trains_on_their_global_batches(acts_dir):
    run = torchrun(acts_dir, 2, *TRAIN, "--shard-tokens", "4000", "-w", "ws_a")
    assert run.returncode == 0, run.stderr[-3000:]
    assert sum(line.startswith("sae/") for line in run.stdout.splitlines()) == 1  # rank 0 alone reports
    got = load_sae(_only_sae(acts_dir / "ws_a"))

    # the same global batches in one process: rank 0's part then rank 1's, from the same store
    (store_dir,) = (acts_dir / "ws_a" / "activations").iterdir()
    store = ActivationStore.open(store_dir)
    assert len(store.shard_rows) == 6
    n_train = StreamSplit.from_store(store).n_train
    parts = [shard_batches(store, n_train, 512, r, 2) for r in range(2)]

    def both(seed, start):
        for a, b in zip(parts[0](seed, start), parts[1](seed, start)):
            yield torch.cat([a, b])
    tcfg = checkpointed(TrainerConfig(total_tokens=40960, batch_size=512, device="cpu"))
    alone = train_sae(EpochBatches(both, parts[0].per_epoch), got.cfg, tcfg)
    for name, want in alone.sae.state_dict().items():
        torch.testing.assert_close(got.state_dict()[name], want, rtol=1e-4, atol=1e-5, msg=name)


def test_a_rank_that_dies_stops_the_others_and_a_rerun_resumes_on_another_count(acts_dir):
    run = torchrun(acts_dir, 2, *TRAIN, "--shard-tokens", "4000", "-w", "ws_b",
                   env={"SAE_STUDIO_FAIL_RANK_AT_STEP": "1:60"})
    assert run.returncode != 0
    # rank 0 says what happened and where the run resumes from (80 steps, checkpoints every 25)
    assert "rank 0 of 2 stopped" in run.stderr
    assert "the last checkpoint is step-00000050" in run.stderr
    assert "run the same command again" in run.stderr
    assert not (acts_dir / "ws_b" / "sae").exists() or not any((acts_dir / "ws_b" / "sae").iterdir())
    again = torchrun(acts_dir, 1, *TRAIN, "--shard-tokens", "4000", "-w", "ws_b")
    assert again.returncode == 0, again.stderr[-3000:]
    history = json.loads((_only_sae(acts_dir / "ws_b") / "history.json").read_text())
    assert history[0]["step"] == 51 and history[-1]["step"] == 80  # resumed from step 50


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_device_cuda_without_cuda_under_torchrun(acts_dir):
    run = torchrun(acts_dir, 2, *[a if a != "cpu" else "cuda" for a in TRAIN], "-w", "ws_d")
    assert run.returncode != 0
    # each rank prints the one-line message (no traceback of ours), before joining any group
    assert run.stderr.count("error: --device cuda under torchrun, but this machine has no CUDA device") == 2
    assert "DistributedError" not in run.stderr
