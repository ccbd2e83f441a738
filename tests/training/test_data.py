"""Training data for SAEs: stores held in memory or streamed from disk (``sae_core.training.data``), the
reader's cheap skip, and exact resume of a streamed run."""
import numpy as np
import pytest
import torch

from sae_core.activations import ActivationStore, import_activation_file, iter_batches
from sae_core.errors import SAECoreError
from sae_core.sae import SAEConfig
from sae_core.training.data import (MEMORY_BUDGET_ENV, EpochBatches, MemorySplit, StreamSplit, memory_budget,
                               open_split)
from sae_core.training.loop import TrainerConfig, _endless, train_sae
from tests.helpers import numbered_store, planted


def _store(tmp_path, x_ND: np.ndarray, shard_tokens: int) -> ActivationStore:
    np.save(tmp_path / "acts.npy", x_ND)
    return import_activation_file(tmp_path / "acts.npy", tmp_path / "store", shard_tokens=shard_tokens)


def _count_reads(store, monkeypatch) -> list:
    reads = []
    real = store.read_shard

    def counted(i, device="cpu"):
        reads.append(i)
        return real(i, device)
    monkeypatch.setattr(store, "read_shard", counted)
    return reads


@pytest.mark.parametrize("bs,buffer,epochs,drop_last", [(64, 300, 2, False), (33, 77, 3, False),
                                                         (100, 256, 1, True), (500, 10, 1, False)])
def test_start_is_the_stream_minus_its_head(tmp_path, bs, buffer, epochs, drop_last):
    store = numbered_store(tmp_path, shard_tokens=77)
    kw = dict(seed=3, epochs=epochs, buffer_tokens=buffer, drop_last=drop_last)
    full = list(iter_batches(store, bs, **kw))
    for start in range(len(full) + 2):
        rest = list(iter_batches(store, bs, start=start, **kw))
        assert len(rest) == max(0, len(full) - start)
        assert all(torch.equal(a, b) for a, b in zip(rest, full[start:])), start


def test_start_reads_no_shard_whose_batches_were_used(tmp_path, monkeypatch):
    store = numbered_store(tmp_path, n=1000, shard_tokens=50)  # 20 shards, groups of 2, 10 batches each
    reads = _count_reads(store, monkeypatch)
    list(iter_batches(store, 10, seed=0, buffer_tokens=100))
    assert len(reads) == 20
    reads.clear()
    tail = list(iter_batches(store, 10, seed=0, buffer_tokens=100, start=95))
    assert len(tail) == 5 and len(reads) == 2  # only the last group (no rows carried: 100 = 10 x 10)


def test_rows_reads_a_range_once(tmp_path):
    store = numbered_store(tmp_path, shard_tokens=77)
    got = torch.cat(list(iter_batches(store, 50, rows=(100, 950), buffer_tokens=200)))[:, 0].long()
    assert sorted(got.tolist()) == list(range(100, 950)) and got.tolist() != sorted(got.tolist())
    tail = torch.cat(list(iter_batches(store, 64, rows=(900, 1000), shuffle=False)))[:, 0].long()
    assert tail.tolist() == list(range(900, 1000))
    with pytest.raises(SAECoreError, match="not a range"):
        next(iter_batches(store, 64, rows=(500, 1001)))


def test_open_split_holds_small_stores_and_streams_large_ones(tmp_path):
    store = numbered_store(tmp_path, shard_tokens=77)  # 1000 rows x 4 float32 = 16,000 bytes
    mem, stream = open_split(store, budget=16_000), open_split(store, budget=15_999)
    assert isinstance(mem, MemorySplit) and isinstance(stream, StreamSplit)
    assert mem.n_eval == stream.n_eval == 100
    for split in (mem, stream):  # held out: the last tenth, in order; trained on: the rest
        held = torch.cat(list(split.eval_batches(64)))[:, 0].long()
        assert held.tolist() == list(range(900, 1000))
        source = split.batches(64)
        assert source.per_epoch == 14
        epoch = list(source(seed=1))
        assert len(epoch) == 14 and all(b.shape == (64, 4) for b in epoch)
        rows = torch.cat(epoch)[:, 0].long()
        assert len(set(rows.tolist())) == 896 and rows.max() < 900
        assert all(torch.equal(a, b) for a, b in zip(source(1, start=5), epoch[5:]))


def test_memory_budget_from_the_environment(monkeypatch):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "0.5")
    assert memory_budget() == 2**29
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "lots")
    with pytest.raises(SAECoreError, match="number of GB"):
        memory_budget()
    monkeypatch.delenv(MEMORY_BUDGET_ENV)
    assert 0 < memory_budget() <= 4 * 2**30


def test_endless_skips_across_epochs_by_arithmetic():
    x = torch.arange(50.0)[:, None]
    epochs_made = []

    def make(seed, start):
        epochs_made.append((seed, start))
        perm = torch.randperm(50, generator=torch.Generator().manual_seed(seed))
        return (x[perm[s:s + 10]] for s in range(start * 10, 50, 10))
    plain = lambda seed: make(seed, 0)  # no per_epoch: the skipped batches are read and dropped
    smart = EpochBatches(make, per_epoch=5)
    want = [b for b, _ in zip(_endless(plain, 7), range(20))]
    for skip in (0, 3, 5, 12):
        epochs_made.clear()
        got = [b for b, _ in zip(_endless(smart, 7, skip=skip), range(20 - skip))]
        assert all(torch.equal(a, b) for a, b in zip(got, want[skip:])) and len(got) == 20 - skip
        assert epochs_made[0] == (7 + skip // 5, skip % 5)  # earlier epochs never made
        got = [b for b, _ in zip(_endless(plain, 7, skip=skip), range(20 - skip))]
        assert all(torch.equal(a, b) for a, b in zip(got, want[skip:]))
    with pytest.raises(SAECoreError, match="fewer rows than one batch"):
        next(_endless(EpochBatches(make, per_epoch=0), 0))


def _planted_np(n: int, seed: int = 0) -> np.ndarray:
    return (planted(n, d_in=16, n_true=32, seed=seed)[0] + 0.2).numpy()


def test_a_streamed_run_resumes_exactly_across_epochs(tmp_path, monkeypatch):
    store = _store(tmp_path, _planted_np(2000), shard_tokens=300)
    split = StreamSplit.from_store(store)  # 1800 training rows: 7 batches of 256 an epoch
    cfg = SAEConfig(arch="sampled", d_in=16, d_sae=128, k=4, l=2)
    tcfg = TrainerConfig(total_tokens=256 * 20, batch_size=256, checkpoint_every=5, seed=2, dead_tokens=512)
    reads = _count_reads(store, monkeypatch)
    straight = train_sae(split.batches(256), cfg, tcfg).sae.state_dict()
    read_straight = len(reads)

    def crash(log, total):
        if log.step == 17:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_sae(split.batches(256), cfg, tcfg, ckpt_dir=tmp_path / "ckpt", on_step=crash)
    reads.clear()
    resumed = train_sae(split.batches(256), cfg, tcfg, ckpt_dir=tmp_path / "ckpt")
    assert resumed.history[0].step == 16  # from the step-15 checkpoint, in the third epoch
    for name, v in straight.items():
        assert torch.equal(resumed.sae.state_dict()[name], v), name
    # 6 shards of training rows, one shuffle group. The straight run reads epochs 0-5 (20 steps,
    # then 16 calibration batches); the resumed one never reads epochs 0 and 1, and reads
    # epochs 2-5 from the batch it stopped at
    assert read_straight == 6 * 6 and len(reads) == read_straight - 2 * 6


def test_train_to_workspace_streams_a_store_over_the_budget(tmp_path, monkeypatch):
    from sae_core.activations import import_to_workspace
    from sae_core.training.job import train_to_workspace
    from sae_core.workspace import Workspace

    np.save(tmp_path / "planted.npy", _planted_np(6000, seed=1))
    cfg = SAEConfig(arch="batchtopk", d_in=16, d_sae=64, k=3)
    tcfg = TrainerConfig(total_tokens=256 * 60, batch_size=256, lr=3e-3, seed=0)
    metrics = {}
    for budget in ("10", "0"):  # in memory, then streamed
        monkeypatch.setenv(MEMORY_BUDGET_ENV, budget)
        ws = Workspace(tmp_path / f"ws{budget}")
        acts = import_to_workspace(ws, tmp_path / "planted.npy")
        if budget == "0":
            def no_whole_reads(self, device="cpu"):
                raise AssertionError("a streamed store was read whole")
            monkeypatch.setattr(ActivationStore, "read_all", no_whole_reads)
        art = train_to_workspace(ws, acts, cfg, tcfg)
        metrics[budget] = __import__("json").loads((art.path / "metrics.json").read_text())
    mem, stream = metrics["10"], metrics["0"]
    assert mem["eval_tokens"] == stream["eval_tokens"] == 600
    assert stream["fvu"] < 0.5 and abs(stream["fvu"] - mem["fvu"]) < 0.05  # (0.33 both, here)
    assert abs(stream["l0"] - mem["l0"]) < 1.0
