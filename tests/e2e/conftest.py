"""Browser end-to-end fixtures: one real `streamlit run app.py` per session, driven by Chromium.

The server gets a fresh workspace (``SAE_STUDIO_WORKSPACE``) and never the network
(``HF_HUB_OFFLINE=1``); its log is kept in ``test-artifacts/streamlit.log`` for failures.
Chromium is Debian's (``make chromium``); Playwright never downloads a browser here.

Every page test reads the same workspace: the demo at its small profile, built once per run by a
background build, as ``make app`` builds the full one (``test_demo_build.py`` watches that build in
the browser; ``demo_built`` waits for it, or starts it when that test did not run). The build has
its own limit (``DEMO_BUILD_LIMIT_S``): the tests' timeouts count their bodies only.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import SMALL_DEMO_ENV

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]
START_TIMEOUT_S = 60
DEMO_PROFILE = "small"
DEMO_BUILD_LIMIT_S = 45 * 60  # about 3 min on an idle 2-core machine; generous for a busy one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.read().decode().strip() == "ok"
    except OSError:
        return False


@pytest.fixture(scope="session")
def workspace_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e-workspace")


@pytest.fixture(scope="session")
def app_url(workspace_dir) -> str:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "streamlit.log", "wb")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SAE_STUDIO_WORKSPACE": str(workspace_dir),
           "SAE_STUDIO_DEMO_PROFILE": DEMO_PROFILE}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with code {proc.returncode}; see {log.name}")
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit was not healthy after {START_TIMEOUT_S} s; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make chromium` to install Debian's Chromium "
                    "(the browser tests never download one)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(60_000)
    pg = context.new_page()
    yield pg
    context.close()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def wait_for_demo(workspace_dir: Path, limit_s: float = DEMO_BUILD_LIMIT_S) -> None:
    """Wait for the workspace's demo build to end; fail with its error when it crashed."""
    from sae_core.demo import read_state

    deadline = time.monotonic() + limit_s
    while (state := read_state(workspace_dir)).state == "running":
        if time.monotonic() > deadline:
            pytest.fail(f"the demo build was not done after {limit_s / 60:.0f} min: {state}")
        time.sleep(2)
    if state.state != "done":
        pytest.fail(f"the demo build ended {state.state}: {state.error}")


@pytest.fixture(scope="session")
def demo_built(workspace_dir) -> Path:
    """The session's workspace with the small demo in it (built in the background if need be)."""
    from sae_core.demo import start_background
    from sae_core.workspace import Workspace

    start_background(Workspace(workspace_dir), DEMO_PROFILE)
    wait_for_demo(workspace_dir)
    os.environ[SMALL_DEMO_ENV] = str(workspace_dir)  # the unit tests' steering studies: copied, not rebuilt
    return workspace_dir


@pytest.fixture(scope="session")
def universality_grid(demo_built):
    """A layer grid around the demo's universality comparison (small profile): both residual layers
    of zoo:tiny-a against zoo:tiny-b's last two (2 x 2 cells, one of them the demo's result; the
    unit tests build the full 2 x 4 grid). Built once, after the tests that need no grid."""
    from sae_core.demo.steps import small_universality_config
    from sae_core.universality.grid import GridConfig, grid_to_workspace
    from sae_core.workspace import Workspace

    hooks = [f"blocks.{i}.hook_resid_post" for i in range(4)]
    return grid_to_workspace(Workspace(demo_built), GridConfig(base=small_universality_config(), hooks_a=tuple(
        hooks[:2]), hooks_b=tuple(hooks[2:])))
