"""What several test modules share: small real artifacts, planted ground truths, the app under
AppTest, torchrun. Test modules import from here, never from each other."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

# the studies at test size are the small demo profile's (sae_core/demo/steps.py): the studies' tests,
# the page tests and the browser tests' shared workspace build the same artifacts
from sae_core.demo.steps import (small_capabilities_config, small_circuits_config,  # noqa: F401
                                 small_gate_config, small_study_config, small_universality_config)

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
APP_TIMEOUT = 120  # the first run imports torch and transformer-lens and loads a model: slow on 2 cores


def small_sweep(workspace, ls=(1.0, 4.0)):
    """A tiny real l-sweep on zoo:tiny-a (seconds): what the Sampled-SAE page tests display."""
    from sae_core.activations import harvest_to_workspace
    from sae_core.training.sweep import SweepConfig, run_sweep

    acts = harvest_to_workspace(workspace, "zoo:tiny-a", "blocks.1.hook_resid_post", n_tokens=6000)
    sc = SweepConfig(k=4, d_sae=64, ls=ls, scorings=("l2",), tokens=4096, batch_size=512)
    return run_sweep(workspace, acts, sc)


def small_study(ws):
    """The small steering study and its gated switch in ``ws``, as the small demo builds them (found at
    once when ``ws`` is a copy of it): ``(study artifact, gated switch artifact)``."""
    from sae_core.steering.job import gate_to_workspace, steering_study_to_workspace

    art = steering_study_to_workspace(ws, small_study_config())
    return art, gate_to_workspace(ws, art, small_gate_config())


def firing_sae(d_in: int, d_sae: int, hook: str, bias: float, seed: int = 0):
    """A seeded ReLU SAE at ``hook`` whose encoder biases are all ``bias`` (> 0: its features fire on
    most tokens, so a metric built on them is far from zero), in eval mode."""
    from sae_core.sae.config import SAEConfig
    from sae_core.sae.registry import create_sae

    torch.manual_seed(seed)
    sae = create_sae(SAEConfig(arch="relu", d_in=d_in, d_sae=d_sae, k=4, hook_name=hook))
    with torch.no_grad():
        sae.b_enc.fill_(bias)
    return sae.eval()


def sae_cfg(arch, **kw):
    """A small SAE configuration (d_in 16, d_sae 64, k 4) with ``kw`` on top."""
    from sae_core.sae import SAEConfig

    return SAEConfig(**(dict(arch=arch, d_in=16, d_sae=64, k=4) | kw))


def batch_source(x_ND, batch):
    """A trainer batch source over ``x_ND``: a fresh seeded shuffle per epoch, full batches only."""
    from sae_core.training.data import memory_batches

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


# set by the browser tests once their small demo is built (they run first: tests/conftest.py);
# fixtures of the same small studies then copy it instead of building them again
SMALL_DEMO_ENV = "SAE_STUDIO_TEST_SMALL_DEMO"


def copy_workspace(root, dest):
    """A workspace at ``dest`` holding a copy of every artifact of the one at ``root`` (registered anew)."""
    import shutil

    from sae_core.workspace import Workspace

    shutil.copytree(root, dest, ignore=shutil.ignore_patterns("registry.sqlite", "demo-build"))
    ws = Workspace(dest)
    ws.reindex()
    return ws


def residual_sae(ws, head: str, name: str, d_sae: int):
    """A seeded TopK SAE of zoo:tiny-b's residual stream after ``head``'s layer, saved in ``ws``:
    ``(sae, hook)`` (what the Circuits page's feature table reads)."""
    from sae_core.sae.config import SAEConfig
    from sae_core.sae.io import save_sae
    from sae_core.sae.registry import create_sae

    hook = f"blocks.{int(head[1:].split('.')[0])}.hook_resid_post"
    torch.manual_seed(1)
    sae = create_sae(SAEConfig(arch="topk", d_in=256, d_sae=d_sae, k=8, model_name="zoo:tiny-b", hook_name=hook))
    with ws.create("sae", name, model="zoo:tiny-b", hook=hook) as d:
        save_sae(sae, d)
    return sae, hook


# --- the app under AppTest ------------------------------------------------------------------------

def app_test():
    """The whole app (``app.py``: sidebar, navigation, home page) under Streamlit's AppTest."""
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(APP, default_timeout=APP_TIMEOUT)


def plotly_values(v) -> list:
    """A trace's array from a chart's JSON spec: plotly writes numeric arrays as typed base64
    (``{"dtype": "f8", "bdata": ...}``), other arrays as lists."""
    import base64

    import numpy as np

    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)


def page_errors(at) -> list[str]:
    return [e.value for e in at.error]


def features_page(at):
    at.switch_page("views/features.py").run()
    assert not at.exception, at.exception
    return at


# --- processes --------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(cwd: Path, n: int, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node n -m sae_core.cli *args`` in ``cwd``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--master-port",
           str(free_port()), "-m", "sae_core.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "300", **(env or {})})


# --- the app in Chromium (tests/e2e) ----------------------------------------------------------

IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
RUN_TIMEOUT_MS = 120_000  # the first run imports torch and loads a model on a busy 2-core machine


def wait_idle(page) -> None:
    """Wait until the script run that the last action started has finished."""
    page.wait_for_selector("[data-testid='stApp']")
    page.wait_for_timeout(300)  # let a rerun the action triggered start before testing for idle
    page.wait_for_selector(IDLE, timeout=RUN_TIMEOUT_MS)


def open_page(page, url: str) -> None:
    page.goto(url)
    wait_idle(page)


def check_and_shoot(page, screenshot_dir, name: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator("[data-testid='stException']")).to_have_count(0)
    # Streamlit scrolls inside its own container, so full_page alone stops at the window: grow the
    # window to the content's height for the shot, then put it back.
    size = page.viewport_size
    height = page.evaluate("""() => Math.max(...[...document.querySelectorAll('*')]
        .filter(e => e.scrollHeight > e.clientHeight + 1 && getComputedStyle(e).overflowY !== 'visible')
        .map(e => e.scrollHeight), document.documentElement.scrollHeight)""")
    page.set_viewport_size({"width": size["width"], "height": min(max(height + 40, size["height"]), 6000)})
    page.wait_for_timeout(500)  # charts re-lay out to the new size
    page.screenshot(path=str(screenshot_dir / f"{name}.png"), full_page=True)
    page.set_viewport_size(size)
