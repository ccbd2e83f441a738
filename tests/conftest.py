import os

import pytest

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


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace that the app (AppTest) and the library both use."""
    from sae_core.workspace import Workspace

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = tmp_path / "ws"
    monkeypatch.setenv("SAE_STUDIO_WORKSPACE", str(root))
    return Workspace(root)


@pytest.fixture
def indexed(workspace, tiny_a):
    """A small sweep and the index of its first SAE (as the Features page would list them)."""
    from sae_core.features.config import IndexConfig
    from sae_core.features.job import index_to_workspace
    from sae_core.sae.io import load_sae
    from tests.helpers import small_sweep

    sweep = small_sweep(workspace)
    art = workspace.list("sae")[0]
    index_to_workspace(workspace, load_sae(art.path), "zoo:tiny-a", "blocks.1.hook_resid_post",
                       IndexConfig(n_tokens=3000, feature_map=False), sae_source=str(art.path), model=tiny_a)
    return sweep, art
