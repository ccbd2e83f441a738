"""What the browser benchmarks share: a real ``streamlit run app.py`` on a workspace, headless
Debian Chromium (``/usr/bin/chromium``; Playwright never downloads a browser), and reruns timed in
the page's own clock (a MutationObserver on the app's script state)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
STATE = "[data-testid='stApp']"
OBSERVE = """() => {
  window.__states = [];
  const app = document.querySelector("[data-testid='stApp']");
  new MutationObserver(() => window.__states.push(
      [performance.now(), app.getAttribute('data-test-script-state')]))
    .observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""
# the time the first idle state after a running one was reached, counted from t0
FINISHED = """(t0) => {
  const s = window.__states.filter(([t]) => t >= t0);
  const run = s.findIndex(([, v]) => v === 'running');
  if (run < 0) return null;
  const done = s.slice(run).find(([, v]) => v === 'notRunning');
  return done ? done[0] - t0 : null;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"streamlit did not answer at {url} within {timeout_s:.0f} s")


def timed(page, act, prepare=None) -> float:
    """Seconds from ``act()`` until the rerun it started has finished, in the page's own clock
    (``prepare()``, such as typing the prompt, runs before the clock starts)."""
    if prepare:
        prepare()
    t0 = page.evaluate("() => performance.now()")
    act()
    page.wait_for_function(f"() => ({FINISHED})({t0}) !== null", timeout=120_000)
    return page.evaluate(FINISHED, t0) / 1000



@contextmanager
def streamlit_server(workspace: Path):
    """Yields the URL of ``streamlit run app.py`` serving ``workspace``; stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SAE_STUDIO_WORKSPACE": str(workspace)}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats",
         "false", "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(url)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


# a page is open when its script is idle and its main heading (an h1 in the main area) is shown
OPENED = """(heading) => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  return [...document.querySelectorAll("[data-testid='stMain'] h1")]
    .some(h => h.textContent.trim() === heading && h.offsetParent !== null);
}"""


def open_timed(page, url: str, heading: str, timeout_ms: int = 300_000) -> float:
    """Seconds from navigating to ``url`` (a new session) until its script is idle with ``heading``
    shown; then installs ``OBSERVE``, so ``timed`` can time the page's reruns."""
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_function(OPENED, arg=heading, timeout=timeout_ms, polling=20)
    seconds = time.perf_counter() - t0
    page.evaluate(OBSERVE)
    return seconds


def compile_sources(prefix: Path) -> None:
    """Compile the app's own modules into ``prefix`` and point ``PYTHONPYCACHEPREFIX`` there, so the
    server started next reads bytecode as a user's Python does from ``__pycache__``: this machine sets
    ``PYTHONDONTWRITEBYTECODE``, under which every server compiled every module again on its first
    import (about 1 s on a page's first open, seen in a profile of the Features page)."""
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "app.py", "views", "sae_app", "sae_core"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def report_reruns(times: dict[str, list[float]], columns: dict[str, int], out: dict, file: str,
                  first: str = "change") -> None:
    """Print one row per kind of rerun (its columns, median and max seconds) and write ``out`` with the
    medians added to ``bench/results/<file>``."""
    import json
    import statistics

    print(f"{first:10} {'columns':>8} {'median s':>9} {'max s':>7}")
    for name, cols in columns.items():
        print(f"{name:10} {cols:>8} {statistics.median(times[name]):>9.2f} {max(times[name]):>7.2f}")
        out[f"{name}_median_s"] = statistics.median(times[name])
    res = REPO / "bench" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / file).write_text(json.dumps(out, indent=2))
