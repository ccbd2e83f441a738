"""A harvest of N tokens stores exactly N rows (it stored the whole last document: 100,000 asked,
100,001 stored), and token counts outside a sane range are refused before any work (issue #28)."""
import pytest
import torch
from typer.testing import CliRunner

from sae_core.activations import ActivationStore, harvest_hooks, harvest_to_workspace
from sae_core.activations import limits
from sae_core.activations.limits import MAX_TOKENS, MIN_TOKENS, check_token_count
from sae_core.activations.parallel import merge_parts, part_dir, text_range
from sae_core.errors import SAECoreError
from sae_core.models.texts import TextSource, texts_for_tokens
from sae_core.workspace import Workspace

HOOK = "blocks.1.hook_resid_post"
N = 3000  # the corpus's documents for 3,000 tokens hold 3,011 kept tokens: the old store's count


@pytest.fixture(scope="module")
def texts(tiny_a):
    texts = texts_for_tokens(tiny_a.tokenizer, N, TextSource().documents(0), 64, True)
    ids = tiny_a.tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert sum(min(len(i) + 1, 64) - 1 for i in ids) == 3011  # more than asked: what has to be cut
    return texts


def _all_rows(tiny_a, texts, out):
    """Every kept token of ``texts`` (no cap): the reference the capped stores are a prefix of."""
    return harvest_hooks(tiny_a, [HOOK], texts, [out], model_name="zoo:tiny-a", shard_tokens=1000)[0]


def test_a_harvest_of_n_tokens_stores_exactly_n_rows(tmp_path, tiny_a, texts):
    ws = Workspace(tmp_path / "ws")
    art = harvest_to_workspace(ws, "zoo:tiny-a", HOOK, n_tokens=N, shard_tokens=1000, model=tiny_a)
    store = ActivationStore.open(art.path)
    assert store.n_tokens == N and art.meta["n_tokens"] == N and art.meta["n_tokens_requested"] == N
    assert store.shard_rows == [1000, 1000, 1000]
    full = _all_rows(tiny_a, texts, tmp_path / "full")
    assert full.n_tokens == 3011
    assert torch.equal(store.read_all(), full.read_all()[:N])  # the first N rows, not some other N
    assert torch.equal(store.token_ids(), full.token_ids()[:N])


def test_a_capped_harvest_resumes_to_the_same_rows(tmp_path, tiny_a, texts):
    kw = dict(model_name="zoo:tiny-a", shard_tokens=700, max_rows=N - 50)
    one = harvest_hooks(tiny_a, [HOOK], texts, [tmp_path / "one"], **kw)[0]

    def stop_after_two_batches(done, total):
        if done >= 64:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        harvest_hooks(tiny_a, [HOOK], texts, [tmp_path / "two"], on_progress=stop_after_two_batches, **kw)
    two = harvest_hooks(tiny_a, [HOOK], texts, [tmp_path / "two"], **kw)[0]
    assert one.n_tokens == two.n_tokens == N - 50
    assert one.shard_rows == two.shard_rows == [700, 700, 700, 700, 150]
    assert torch.equal(one.read_all(), two.read_all())


def test_merged_rank_parts_are_cut_at_the_requested_rows(tmp_path, tiny_a, texts):
    parts = []
    for rank in range(2):
        lo, hi = text_range(len(texts), 32, rank, 2)
        parts.append(part_dir(tmp_path / "merged", rank, 2))
        harvest_hooks(tiny_a, [HOOK], texts[lo:hi], [parts[-1]], model_name="zoo:tiny-a", shard_tokens=1000,
                      doc_offset=lo)
    full = _all_rows(tiny_a, texts, tmp_path / "full")
    merged = merge_parts(tmp_path / "merged", parts, max_rows=N)
    assert merged.n_tokens == N and sum(merged.shard_rows) == N
    assert torch.equal(merged.read_all(), full.read_all()[:N])
    for a, b in zip(merged.row_keys(), full.row_keys()):
        assert torch.equal(a, b[:N])


@pytest.mark.parametrize("bad", [0, 5, MIN_TOKENS - 1, MAX_TOKENS + 1, 10 ** 12])
def test_token_counts_outside_the_range_are_refused_with_the_range(bad, tmp_path):
    message = f"n_tokens={bad}: a harvest takes 256 to 10,000,000,000 tokens"
    with pytest.raises(SAECoreError, match=message):
        check_token_count(bad)
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(SAECoreError, match=message):  # before any model is loaded
        harvest_to_workspace(ws, "zoo:no-such-model", HOOK, n_tokens=bad)
    assert ws.list("activations") == []


def test_the_range_ends_are_allowed():
    check_token_count(MIN_TOKENS)
    check_token_count(MAX_TOKENS)


def test_the_cli_refuses_five_tokens_with_the_same_message(tmp_path):
    from sae_core.cli import app

    r = CliRunner().invoke(app, ["harvest", "zoo:tiny-a", "--hook", HOOK, "--tokens", "5",
                                 "--workspace", str(tmp_path / "ws")])
    assert r.exit_code != 0
    assert "n_tokens=5: a harvest takes 256 to 10,000,000,000 tokens" in r.output, r.output


def test_a_harvest_larger_than_the_free_disk_is_refused(tmp_path, tiny_a, monkeypatch):
    class Usage:
        free = 10_000_000  # 10 MB: 19,531 rows of d=128 float32

    monkeypatch.setattr(limits.shutil, "disk_usage", lambda root: Usage)
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(SAECoreError, match=r"n_tokens=1,000,000 needs 0.5 GB .*128 values per token.*0.0 GB "
                                           r"free; harvest at most 19,531 tokens"):
        harvest_to_workspace(ws, "zoo:tiny-a", HOOK, n_tokens=1_000_000, model=tiny_a)
    assert ws.list("activations") == []
