"""Circuits page redraw time in the browser (issue #14 target: a saved circuit redrawn after a
threshold change in under 1 s).

Starts ``streamlit run app.py`` on a workspace holding a circuits study (``bench.browser``), opens
the Circuits page in headless Chromium and moves the edge-threshold slider one step at a time
(arrow keys), timing in the page's own clock from the key press until (a) the rerun is idle again
and (b) the graph's last DOM change (the figure redrawn; read 0.8 s after the rerun ended). The first open (imports,
reading the study) is not timed. Writes ``bench/results/circuits_page.json``.

    .venv/bin/python bench/circuits_page.py --workspace DIR [--rounds 10]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.browser import CHROMIUM, OBSERVE, REPO, STATE, streamlit_server, timed  # noqa: E402
from sae_core.circuits.job import KIND  # noqa: E402
from sae_core.workspace import Workspace  # noqa: E402

TITLE = "() => [...document.querySelectorAll('.gtitle')].map(t => t.textContent).find(t => t.includes('edges,'))"
# every change to the graph's DOM, timed: the redraw is done at the last one after the key press
WATCH_GRAPH = """() => {
  window.__drawn = [];
  const chart = document.querySelector("[data-testid='stMain']");
  new MutationObserver(() => window.__drawn.push(performance.now()))
    .observe(chart, {subtree: true, childList: true, attributes: true, characterData: true});
}"""
LAST_DRAWN = "(t0) => Math.max(t0, ...window.__drawn.filter(t => t >= t0)) - t0"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workspace", type=Path, required=True, help="a workspace holding a circuits study")
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    if not Workspace(args.workspace).list(KIND):
        raise SystemExit(f"no circuits study in {args.workspace}: run `sae-core circuit discover -w "
                         f"{args.workspace}` (or `sae-core demo`) first")
    from playwright.sync_api import sync_playwright

    idle, drawn, titles = [], [], []
    with streamlit_server(args.workspace) as url:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/circuits")
            page.wait_for_selector(f"{STATE}[data-test-script-state='notRunning']", timeout=180_000)
            page.wait_for_function(f"() => ({TITLE})() !== undefined", timeout=180_000)
            page.evaluate(OBSERVE)
            page.evaluate(WATCH_GRAPH)
            thumb = page.get_by_role("slider", name="Edge threshold (% of the model's logit difference)")
            key = "ArrowLeft"
            for i in range(args.rounds):
                t0 = page.evaluate("() => performance.now()")
                idle.append(timed(page, lambda: thumb.press(key)))
                page.wait_for_timeout(800)
                drawn.append(page.evaluate(LAST_DRAWN, t0) / 1000)
                titles.append(page.evaluate(TITLE))
                key = "ArrowLeft" if i % 6 < 3 else "ArrowRight"
            browser.close()
    print(f"Circuits page: edge-threshold slider, {args.rounds} steps (load {os.getloadavg()[0]:.2f})")
    print(f"{'until':16} {'median s':>9} {'max s':>7}")
    out = {"rounds": args.rounds, "load": os.getloadavg()[0], "idle_s": idle, "drawn_s": drawn, "titles": titles}
    for name, xs in (("rerun idle", idle), ("graph redrawn", drawn)):
        print(f"{name:16} {statistics.median(xs):>9.2f} {max(xs):>7.2f}")
    out["idle_median_s"], out["drawn_median_s"] = statistics.median(idle), statistics.median(drawn)
    res = REPO / "bench" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "circuits_page.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
