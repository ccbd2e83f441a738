"""summarize_activations / summarize_store against plain numpy."""
import numpy as np
import pytest
import torch

from sae_core.activations import summary
from sae_core.activations.summary import StoreSummary, summarize_activations, summarize_store


def _acts(n=1000, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, d) + rng.uniform(-2, 2, d)).astype(np.float32)


def test_matches_numpy():
    x = _acts()
    s = summarize_activations(x, bins=20)
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    ref_counts, ref_edges = np.histogram(norms, bins=20)
    assert isinstance(s, StoreSummary) and (s.n_tokens, s.d) == x.shape
    np.testing.assert_allclose(s.mean_D, x.astype(np.float64).mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s.std_D, x.astype(np.float64).std(0), rtol=1e-9)
    np.testing.assert_array_equal(s.norm_counts, ref_counts)
    np.testing.assert_allclose(s.norm_edges, ref_edges)
    assert s.norm_counts.sum() == len(x)
    np.testing.assert_allclose(s.norm_centers, (ref_edges[:-1] + ref_edges[1:]) / 2)
    assert s.norm_mean == pytest.approx(norms.mean()) and s.norm_std == pytest.approx(norms.std())


def test_chunking_and_torch_input(monkeypatch):
    x = _acts(n=1037, d=8, seed=1)
    whole = summarize_activations(x)
    monkeypatch.setattr(summary, "CHUNK_ROWS", 100)  # 11 chunks, the last one partial
    chunked = summarize_activations(torch.from_numpy(x).to(torch.bfloat16).float())
    np.testing.assert_allclose(chunked.mean_D, whole.mean_D, atol=0.02)
    chunked_exact = summarize_activations(torch.from_numpy(x))
    np.testing.assert_allclose(chunked_exact.mean_D, whole.mean_D, rtol=1e-10)
    np.testing.assert_allclose(chunked_exact.std_D, whole.std_D, rtol=1e-9)
    np.testing.assert_array_equal(chunked_exact.norm_counts, whole.norm_counts)


def test_constant_column_has_zero_std():
    x = np.full((50, 3), 7.25, dtype=np.float32)
    s = summarize_activations(x)
    np.testing.assert_array_equal(s.std_D, 0.0)
    np.testing.assert_allclose(s.mean_D, 7.25)


def test_summarize_store_reads_shard_by_shard():
    x = _acts(n=100, d=4)

    class ShardedStore:  # the ActivationStore interface: shard_rows and read_shard(i) -> (acts, tokens)
        shard_rows = [40, 40, 20]

        def read_shard(self, i):
            start = sum(self.shard_rows[:i])
            return torch.from_numpy(x[start:start + self.shard_rows[i]]), None

        def read_all(self):
            raise AssertionError("a sharded store must not be read whole")

    class FlatStore:
        def read_all(self):
            return torch.from_numpy(x)

    whole = summarize_activations(x)
    for store in (ShardedStore(), FlatStore()):
        s = summarize_store(store)
        assert s.n_tokens == 100
        np.testing.assert_allclose(s.mean_D, x.astype(np.float64).mean(0), rtol=1e-10)
        np.testing.assert_allclose(s.std_D, whole.std_D, rtol=1e-9)
        np.testing.assert_array_equal(s.norm_counts, whole.norm_counts)


def test_empty_raises():
    with pytest.raises(ValueError, match="0 tokens"):
        summarize_activations(np.zeros((0, 4), dtype=np.float32))
