import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_collection_modifyitems(items):
    """The browser tests first (in their own order): the small demo they build once is what the
    steering tests then copy (``steering_ws``) instead of building its studies again."""
    items.sort(key=lambda item: "e2e" not in item.keywords)


@pytest.fixture(scope="session")
def circuits_template(tmp_path_factory):
    """The small circuits study (the small demo profile's), once per run: a copy of the browser
    tests' demo study when they built it in this run (the same configuration), else built here:
    ``(workspace root, artifact name)``. (The job's progress reports are checked where a study is
    built: tests/circuits/test_paper_study.py.)"""
    import shutil

    from sae_core.circuits.job import KIND, CircuitStudy, circuits_to_workspace
    from sae_core.workspace import Workspace
    from tests.helpers import SMALL_DEMO_ENV, small_circuits_config

    cfg = small_circuits_config()
    root = tmp_path_factory.mktemp("circuits") / "ws"
    if built := os.environ.get(SMALL_DEMO_ENV):
        made = [a for a in Workspace(built).list(KIND) if CircuitStudy.open(a.path).config == cfg.to_json()]
        if made:
            shutil.copytree(made[0].path, root / KIND / made[0].name)
            ws = Workspace(root)
            ws.reindex()
            return ws.root, made[0].name
    art = circuits_to_workspace(Workspace(root), cfg)
    return root, art.name


@pytest.fixture(scope="module")
def circuits_ws(circuits_template, tmp_path_factory):
    """A workspace of the module's own holding that study (a copy: modules add SAEs and studies to
    it): ``(workspace, artifact)``."""
    from sae_core.circuits.job import KIND
    from tests.helpers import copy_workspace

    root, name = circuits_template
    ws = copy_workspace(root, tmp_path_factory.mktemp("circuits-copy") / "ws")
    return ws, ws.get(KIND, name)


@pytest.fixture(scope="session")
def steering_ws(tmp_path_factory):
    """One workspace for the steering study and the corrupted-capabilities study, so the page test
    finds both without building either twice: a copy of the browser tests' small demo when it was
    built in this run (it holds the same two studies), else an empty one the tests build them in."""
    from sae_core.workspace import Workspace
    from tests.helpers import SMALL_DEMO_ENV, copy_workspace

    dest = tmp_path_factory.mktemp("steer") / "ws"
    if built := os.environ.get(SMALL_DEMO_ENV):
        return copy_workspace(built, dest)
    return Workspace(dest)


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


@pytest.fixture(scope="session")
def tiny_b_backdoor():
    """The zoo's backdoored model B (the steering studies' target), loaded once per session; do not mutate."""
    from sae_core.models.loading import load_model

    return load_model("zoo:tiny-b-backdoor")


@pytest.fixture(scope="session")
def tiny_l():
    """The zoo's Llama-family model (byte-level BPE), loaded once per session; do not mutate."""
    from sae_core.models.loading import load_model

    return load_model("zoo:tiny-l")


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
