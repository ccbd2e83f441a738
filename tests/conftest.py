import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

@pytest.fixture(scope="session")
def steering_ws(tmp_path_factory):
    """One workspace for the steering study and the corrupted-capabilities study, so the page test
    finds both without building either twice."""
    from sae_core.workspace import Workspace

    return Workspace(tmp_path_factory.mktemp("steer") / "ws")


@pytest.fixture(scope="session")
def tiny_a():
    """The zoo's model A as a TransformerBridge (loaded once per session; do not mutate)."""
    from sae_core.models.loading import load_model

    return load_model("zoo:tiny-a")


@pytest.fixture(scope="session")
def tiny_b():
    """The zoo's model B (4 layers x 8 heads), loaded once per session; do not mutate."""
    from sae_core.models.loading import load_model

    return load_model("zoo:tiny-b")


def small_sweep(workspace, ls=(1.0, 4.0)):
    """A tiny real l-sweep on zoo:tiny-a (seconds): what the Sampled-SAE page tests display."""
    from sae_core.activations import harvest_to_workspace
    from sae_core.sae.sweep import SweepConfig, run_sweep

    acts = harvest_to_workspace(workspace, "zoo:tiny-a", "blocks.1.hook_resid_post", n_tokens=6000)
    sc = SweepConfig(k=4, d_sae=64, ls=ls, scorings=("l2",), tokens=4096, batch_size=512)
    return run_sweep(workspace, acts, sc)


def batch_source(x_ND, batch):
    """A trainer batch source over ``x_ND``: a fresh seeded shuffle per epoch, full batches only."""
    from sae_core.sae.data import memory_batches

    return memory_batches(x_ND, batch)


def sae_state(cfg, seed, bias=0.3):
    """State dict of a fresh SAE of ``cfg`` with random b_enc (std ``bias``) and b_dec."""
    from sae_core.sae import create_sae

    torch.manual_seed(seed)
    sae = create_sae(cfg)
    with torch.no_grad():
        sae.b_enc.normal_(0, bias)
        sae.b_dec.normal_()
    return sae.state_dict()


def planted(n, d_in=32, n_true=48, per_token=3, seed=0):
    """``(x [n, d_in], true [n_true, d_in])``: each row a positive mix of ``per_token`` of
    ``n_true`` random unit directions (the ground truth an SAE should recover)."""
    g = torch.Generator().manual_seed(seed)
    true = torch.randn(n_true, d_in, generator=g)
    true /= true.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(n_true, generator=g)[:per_token] for _ in range(n)])
    coef = torch.zeros(n, n_true).scatter_(1, idx, torch.rand(n, per_token, generator=g) * 2 + 0.5)
    return coef @ true, true


def numbered_store(tmp_path, n=1000, d=4, shard_tokens=128):
    """A store whose row i holds i in every column, so batches can be traced back to rows."""
    import numpy as np

    from sae_core.activations import import_activation_file

    np.save(tmp_path / "rows.npy", np.repeat(np.arange(n, dtype=np.float32)[:, None], d, axis=1))
    return import_activation_file(tmp_path / "rows.npy", tmp_path / "store", shard_tokens=shard_tokens)
