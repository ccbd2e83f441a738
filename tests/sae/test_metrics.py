"""SAE metrics against numpy: L0, FVU, dead/dense fractions, shared structure, density histogram."""
import numpy as np
import pytest
import torch

from sae_core.sae.metrics import MetricAccumulator, shared_structure


def test_metrics_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 12)) + 2.0
    x_hat = x + rng.normal(scale=0.3, size=x.shape)
    z = np.maximum(rng.normal(size=(200, 40)) - 1.0, 0)
    z[:, :5] = 0                      # dead latents
    z[:, 5] = rng.random(200) + 0.1   # a dense latent
    acc = MetricAccumulator(40)
    for s in range(0, 200, 64):       # streaming in uneven batches
        acc.update(*(torch.tensor(a[s:s + 64]) for a in (x, x_hat, z)))
    m = acc.result()
    fvu = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert m.fvu == pytest.approx(fvu, rel=1e-9)
    assert m.explained_variance == pytest.approx(1 - fvu, rel=1e-9)
    assert m.l0 == pytest.approx((z != 0).sum(1).mean())
    assert m.mse == pytest.approx(((x - x_hat) ** 2).mean())
    cos = (x * x_hat).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(x_hat, axis=1)
    assert m.cosine == pytest.approx(cos.mean(), rel=1e-9)
    density = (z != 0).mean(0)
    assert m.dead_fraction == pytest.approx((density == 0).mean())
    assert m.dense_fraction == pytest.approx((density > 0.1).mean())


def test_shared_structure_matches_brute_force():
    rng = np.random.default_rng(4)
    z = np.maximum(rng.normal(size=(25, 30)) - 0.8, 0)
    distinct, overlap, top_mass = shared_structure(torch.tensor(z), k=5)
    active = z != 0
    assert distinct == active.any(0).sum()
    pairs = [(active[i] & active[j]).sum() for i in range(25) for j in range(25) if i != j]
    assert overlap == pytest.approx(np.mean(pairs) / active.sum(1).mean(), rel=1e-9)
    assert top_mass == pytest.approx(np.sort(z.sum(0))[-5:].sum() / z.sum(), rel=1e-9)


def test_density_histogram_matches_numpy():
    from sae_core.sae.metrics import density_histogram

    rng = np.random.default_rng(5)
    density = 10 ** rng.uniform(-7, 0, size=500)
    density[:20] = 0.0  # dead latents land in the first bin
    edges, counts = density_histogram(torch.tensor(density), bins=16)
    ref_counts, ref_edges = np.histogram(np.log10(np.maximum(density, 1e-8)), bins=16, range=(-8, 0))
    np.testing.assert_allclose(edges, ref_edges, atol=1e-6)
    assert counts == ref_counts.tolist() and sum(counts) == 500
