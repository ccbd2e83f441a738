"""Distributed harvesting (issue #15): ``torchrun --nproc-per-node 2 -m sae_core.cli harvest`` on
the CPU writes one store whose rows equal a single-process harvest's, row for row."""
import pytest
import torch

from sae_core.activations import ActivationStore, harvest_to_workspace
from sae_core.activations.parallel import text_range
from sae_core.workspace import Workspace
from tests.helpers import torchrun

HOOK = "blocks.1.hook_resid_post"


def test_text_ranges_are_whole_batches_covering_every_text_once():
    for n, world in [(1000, 2), (1000, 3), (33, 2), (10, 4)]:
        ranges = [text_range(n, 32, r, world) for r in range(world)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert all(lo % 32 == 0 for lo, _ in ranges)


@pytest.mark.slow  # spawns torchrun
def test_two_ranks_harvest_the_store_one_process_harvests(tmp_path, tiny_a):
    run = torchrun(tmp_path, 2, "harvest", "zoo:tiny-a", "--hook", HOOK, "--tokens", "6000",
                   "--shard-tokens", "1000", "--device", "cpu", "-w", "ws2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert sum(line.startswith("activations/") for line in run.stdout.splitlines()) == 1
    (two,) = Workspace(tmp_path / "ws2").list("activations")
    one = harvest_to_workspace(Workspace(tmp_path / "ws1"), "zoo:tiny-a", HOOK, n_tokens=6000,
                               shard_tokens=1000, model=tiny_a)
    assert two.name == one.name and two.meta["n_tokens"] == one.meta["n_tokens"]
    a, b = ActivationStore.open(one.path), ActivationStore.open(two.path)
    assert not list(two.path.glob(".part-*"))  # the parts were merged and removed
    assert len(a.shard_rows) >= 6 and sum(b.shard_rows) == a.n_tokens  # (each rank's last shard may be short)
    assert torch.equal(a.read_all(), b.read_all())
    assert torch.equal(a.token_ids(), b.token_ids())
    for ka, kb in zip(a.row_keys(), b.row_keys()):
        assert torch.equal(ka, kb)  # the same (document, position) of every row
    assert a.meta == b.meta.__class__(**{**b.meta.__dict__, "n_tokens": a.n_tokens})
