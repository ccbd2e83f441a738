"""The activation lottery: per-latent numbers against numpy, and a planted rare high-magnitude
latent that BatchTopK lets win and an entropy-scored pool keeps out."""
import numpy as np
import pytest
import torch

from sae_core.evaluation.lottery import activation_lottery
from sae_core.sae.config import SAEConfig
from sae_core.sae.registry import create_sae


def _identity_sae(arch, **kw):
    """An SAE whose codes are relu(x) itself (W_enc = W_dec = I, no biases), so a planted x is
    exactly the pre-activations."""
    sae = create_sae(SAEConfig(arch=arch, d_in=16, d_sae=16, k=2, **kw)).eval()
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(16))
        sae.W_dec.copy_(torch.eye(16))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def _planted(n=512, seed=0):
    """Latent 0 fires on 2% of tokens at 10 (rare, high magnitude); latents 1-15 on about half
    of the tokens at 0.5-1.5 (frequent, mid magnitude)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 16, generator=g) < 0.5) * (0.5 + torch.rand(n, 16, generator=g))
    x[:, 0] = (torch.rand(n, generator=g) < 0.02) * 10.0
    return x


def test_frequency_and_magnitude_match_numpy():
    x = _planted()
    sae = _identity_sae("batchtopk")
    res = activation_lottery(sae, [x[:256], x[256:]])
    z = np.concatenate([sae.encode_batch_rule(b).detach().numpy() for b in (x[:256], x[256:])])
    np.testing.assert_allclose(res.frequency, (z > 0).mean(0), rtol=1e-12)
    fired = (z > 0).sum(0)
    expected = [z[:, j][z[:, j] > 0].mean() if fired[j] else None for j in range(16)]
    for got, want in zip(res.mean_when_firing, expected):
        assert (got is None) == (want is None) and (got is None or got == pytest.approx(want, rel=1e-6))
    # BatchTopK is its own lottery: the winners and their share are the same under both views
    assert res.top_latents == [0]
    assert res.top_share == res.top_share_batchtopk > 0
    assert res.winners_overlap == 1.0
    assert res.n_tokens == 512 and res.rule.startswith("batch rule")


def test_an_entropy_pool_keeps_the_rare_high_magnitude_latent_out():
    """Entropy scores latent 0 low (its mass sits on a few tokens), so a pool of 8 of 16 latents
    leaves it out: it wins slots under plain BatchTopK and none under the Sampled-SAE's rule."""
    x = _planted()
    sae = _identity_sae("sampled", l=4.0, scoring="entropy")
    res = activation_lottery(sae, [x[:256], x[256:]])
    assert res.top_latents == [0]
    assert res.top_share == 0.0 < res.top_share_batchtopk
    assert res.frequency[0] == 0.0 and res.mean_when_firing[0] is None
    assert 0 < res.winners_overlap < 1
    # L2 scores it high (a column of 10s), so the L2 pool lets it in
    l2 = activation_lottery(_identity_sae("sampled", l=4.0, scoring="l2"), [x[:256], x[256:]])
    assert l2.top_share > 0
