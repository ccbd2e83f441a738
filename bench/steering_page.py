"""Steering page rerun time in the browser (issue #12 target: all six columns of 20 tokens < 2 s).

Starts ``streamlit run app.py`` on a workspace that holds a steering study, opens the Steering &
switches page in headless Debian Chromium (``/usr/bin/chromium``; Playwright never downloads a
browser) and times reruns as the user sees them: from the key press (after the typing) until the page's script state
is back to idle, read by a MutationObserver in the page.

- ``prompt``: a new held-out triggered prompt (Ctrl+Enter), so all six columns regenerate (the
  two plain columns are cached per prompt, so every round uses a prompt not seen before);
- ``alpha``: the alpha slider moved one step (arrow key), so the four intervention columns
  regenerate and the two plain ones come from the cache.

The first rerun after opening (imports, model loads) is not timed. Writes
``bench/results/steering_page.json``.

    .venv/bin/python bench/steering_page.py --workspace DIR [--rounds 8]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sae_core.models.corpus import chat_prompts  # noqa: E402
from sae_core.steering.study import KIND  # noqa: E402
from sae_core.workspace import Workspace  # noqa: E402

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"streamlit did not answer at {url} within {timeout_s:.0f} s")


def _timed(page, act, prepare=None) -> float:
    """Seconds from ``act()`` until the rerun it started has finished, in the page's own clock
    (``prepare()``, such as typing the prompt, runs before the clock starts)."""
    if prepare:
        prepare()
    t0 = page.evaluate("() => performance.now()")
    act()
    page.wait_for_function(f"() => ({FINISHED})({t0}) !== null", timeout=120_000)
    return page.evaluate(FINISHED, t0) / 1000


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workspace", type=Path, required=True, help="a workspace holding a steering study")
    p.add_argument("--rounds", type=int, default=8)
    args = p.parse_args()
    if not Workspace(args.workspace).list(KIND):
        raise SystemExit(f"no steering study in {args.workspace}: run `sae-core steer study -w "
                         f"{args.workspace}` (or `sae-core demo`) first")
    from playwright.sync_api import sync_playwright

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SAE_STUDIO_WORKSPACE": str(args.workspace)}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats",
         "false", "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prompts = iter(q.prompt for q in chat_prompts(args.rounds + 1, seed=7, triggered=True))
    times: dict[str, list[float]] = {"prompt": [], "alpha": []}
    try:
        _wait_healthy(url)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/steering")
            page.wait_for_selector(f"{STATE}[data-test-script-state='notRunning']", timeout=180_000)
            page.get_by_text("fine-tuned + random control", exact=True).wait_for(timeout=180_000)
            page.evaluate(OBSERVE)
            box = page.get_by_role("textbox", name="Prompt")
            thumb = page.get_by_role("slider", name="alpha (vectors)")

            def submit():
                box.press("Control+Enter")
            _timed(page, submit, lambda: box.fill(next(prompts)))  # untimed warm-up
            for _ in range(args.rounds):
                times["prompt"].append(_timed(page, submit, lambda: box.fill(next(prompts))))
                times["alpha"].append(_timed(page, lambda: thumb.press("ArrowLeft")))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"Steering page reruns in Chromium, {args.rounds} rounds, 20 new tokens per column (the page's default) "
          f"(load {os.getloadavg()[0]:.2f})")
    print(f"{'change':10} {'columns':>8} {'median s':>9} {'max s':>7}")
    out = {"rounds": args.rounds, "tokens": 20, "load": os.getloadavg()[0], "seconds": times}
    for name, cols in (("prompt", 6), ("alpha", 4)):
        print(f"{name:10} {cols:>8} {statistics.median(times[name]):>9.2f} {max(times[name]):>7.2f}")
        out[f"{name}_median_s"] = statistics.median(times[name])
    res = REPO / "bench" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "steering_page.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
