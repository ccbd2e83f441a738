"""`make app` on a fresh workspace, as a newcomer meets it (issue #28): the demo build started in the
background, the server started, the home page's first answer in Chromium; then the build watched to
its end, and the time of each demo step (from the build's own progress file).

Targets: the home page in under 30 s; every demo step under 2 minutes (README's table).

    .venv/bin/python bench/app_start.py [--profile full|small] [--workspace DIR] [--no-wait]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from browser import CHROMIUM, REPO, free_port, wait_healthy

sys.path.insert(0, str(REPO))
from sae_core.demo import read_state  # noqa: E402

IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="full", choices=["full", "small"])
    ap.add_argument("--workspace", type=Path, help="default: a fresh temporary directory")
    ap.add_argument("--no-wait", action="store_true", help="stop after the first page (leave the build running)")
    args = ap.parse_args()
    ws = args.workspace or Path(tempfile.mkdtemp(prefix="app-start-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SAE_STUDIO_WORKSPACE": str(ws), "SAE_STUDIO_DEMO_PROFILE": args.profile}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    # the Makefile's two commands, in order
    subprocess.run([str(REPO / ".venv/bin/sae-core"), "demo", "--background"], cwd=REPO, env=env, check=True)
    t_started = time.perf_counter() - t0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                               "--server.port", str(port), "--server.address", "127.0.0.1",
                               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(url)
        t_healthy = time.perf_counter() - t0
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(url)
            page.get_by_role("heading", name="SAE Studio", exact=True).wait_for(timeout=300_000)
            page.wait_for_selector(IDLE, timeout=300_000)
            t_home = time.perf_counter() - t0
            shows = page.get_by_test_id("stMain").inner_text()
            browser.close()
        print(f"load average at start {load:.2f}; workspace {ws}; profile {args.profile}")
        print(f"{'background build started (sae-core demo --background)':58} {t_started:7.1f} s")
        print(f"{'server healthy':58} {t_healthy:7.1f} s")
        print(f"{'home page answered in Chromium (target < 30 s)':58} {t_home:7.1f} s "
              f"{'PASS' if t_home < 30 else 'FAIL'}")
        print(f"{'home page shows the build':58} {'yes' if 'Building the demo workspace' in shows else 'NO'}")
        result = {"profile": args.profile, "load": load, "started_s": t_started, "healthy_s": t_healthy,
                  "home_s": t_home, "steps": []}
        if not args.no_wait:
            while (state := read_state(ws)).state == "running":
                time.sleep(5)
            print(f"\nbuild ended {state.state}" + (f": {state.error}" if state.error else ""))
            print(f"{'#':>2} {'step':90} {'seconds':>8} {'< 120 s':>8}")
            for i, s in enumerate(state.steps, 1):
                secs = s.seconds or float("nan")
                print(f"{i:>2} {s.name[:90]:90} {secs:8.1f} {'yes' if secs < 120 else 'NO':>8}")
                result["steps"].append({"step": i, "name": s.name, "seconds": s.seconds})
            print(f"{'':>2} {'total':90} {sum(s.seconds or 0 for s in state.steps):8.1f}")
        out = REPO / "bench" / "results" / "app_start.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
