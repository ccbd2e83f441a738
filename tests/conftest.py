import os
from pathlib import Path

import pytest
from streamlit.runtime import pages_manager
from streamlit.runtime.scriptrunner import script_runner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ZOO = Path(__file__).resolve().parents[1] / "assets" / "zoo"


def zoo_built(name: str) -> bool:
    return (ZOO / name / "config.json").exists()


@pytest.fixture(scope="session")
def tiny_a():
    """The zoo's model A as a TransformerBridge (loaded once per session; do not mutate)."""
    from sae_core.models.loading import load_model

    return load_model("zoo:tiny-a")


class _EntryScriptPagesManager(pages_manager.PagesManager):
    uses_pages_directory = False


@pytest.fixture(autouse=True)
def run_entry_script_every_time(monkeypatch):
    """Make every AppTest run execute app.py, as the real server does.

    Streamlit 1.67's AppTest builds a fresh PagesManager per run; seeing a ``pages/`` folder beside
    app.py it takes the old multipage (v1) path, which on a rerun executes the page file alone:
    no app.py, so no sidebar. The real server runs app.py every time (the e2e tests check it).
    """
    monkeypatch.setattr(script_runner, "PagesManager", _EntryScriptPagesManager)


def small_sweep(workspace, ls=(1.0, 4.0)):
    """A tiny real l-sweep on zoo:tiny-a (seconds): what the Sampled-SAE page tests display."""
    from sae_core.activations import harvest_to_workspace
    from sae_core.sae.sweep import SweepConfig, run_sweep

    acts = harvest_to_workspace(workspace, "zoo:tiny-a", "blocks.1.hook_resid_post", n_tokens=6000)
    sc = SweepConfig(k=4, d_sae=64, ls=ls, scorings=("l2",), tokens=4096, batch_size=512)
    return run_sweep(workspace, acts, sc)
