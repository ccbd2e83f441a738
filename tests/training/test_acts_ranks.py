"""``torchrun --nproc-per-node N -m sae_core.cli train --acts FILE`` (issue #28): the import cuts
the file into shards small enough that every rank trains on one, and a file too small for the
ranks is an error that speaks of ``--acts`` (not of ``harvest --shard-tokens``, which it did not use)."""
import numpy as np
import pytest

from sae_core.activations import ActivationStore
from sae_core.distributed import DistributedError
from sae_core.training.data import StreamSplit, rank_shards
from sae_core.training.ranks import check_file_ranks, rank_shard_tokens
from tests.helpers import numbered_store, planted, torchrun


def test_an_import_for_n_ranks_gives_each_rank_a_shard_of_training_rows(tmp_path):
    # 40,000 rows: 36,000 for training (the last 4,000 held out), 18,000 per rank of 2
    assert rank_shard_tokens(40_000, 2, 65_536) == 18_000
    assert rank_shard_tokens(40_000, 8, 65_536) == 4_500
    assert rank_shard_tokens(40_000, 2, 4_000) == 4_000  # smaller shards asked for are kept
    store = numbered_store(tmp_path, n=1000, shard_tokens=rank_shard_tokens(1000, 3, 65_536))
    assert store.shard_rows == [300, 300, 300, 100]
    owned = rank_shards(store, StreamSplit.from_store(store).n_train, 3)
    assert owned == [[0], [1], [2]]  # shard 3 starts at row 900: held out


def test_a_file_with_fewer_training_rows_than_ranks_says_so(tmp_path):
    store = numbered_store(tmp_path, n=10, shard_tokens=rank_shard_tokens(10, 12, 65_536))
    with pytest.raises(DistributedError) as e:
        check_file_ranks(store, 12, tmp_path / "rows.npy")
    assert str(e.value) == (f"--acts {tmp_path / 'rows.npy'} holds 10 rows, 9 of them for training (the last 10% "
                            "is held out): too few for 12 ranks, which each train on their own rows; start at most "
                            "9 ranks (--nproc-per-node) or give a larger file")
    check_file_ranks(store, 9, tmp_path / "rows.npy")  # 9 ranks: a row each


@pytest.mark.slow  # spawns torchrun
def test_two_ranks_train_on_a_40000_row_file_with_the_default_shards(tmp_path):
    np.save(tmp_path / "acts.npy", (planted(40_000, d_in=16, n_true=40)[0] + 0.2).numpy().astype(np.float32))
    run = torchrun(tmp_path, 2, "train", "--acts", "acts.npy", "--arch", "topk", "--k", "4", "--d-sae", "32",
                   "--tokens", "4096", "--batch-size", "512", "--device", "cpu", "-w", "ws")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "harvest --shard-tokens" not in run.stderr
    assert sum(line.startswith("sae/user-file__user__") for line in run.stdout.splitlines()) == 1
    (store_dir,) = (tmp_path / "ws" / "activations").iterdir()
    assert ActivationStore.open(store_dir).shard_rows == [18_000, 18_000, 4_000]
