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
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.browser import CHROMIUM, OBSERVE, STATE, report_reruns, streamlit_server, timed  # noqa: E402
from sae_core.models.corpus import chat_prompts  # noqa: E402
from sae_core.steering.study import KIND  # noqa: E402
from sae_core.workspace import Workspace  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workspace", type=Path, required=True, help="a workspace holding a steering study")
    p.add_argument("--rounds", type=int, default=8)
    args = p.parse_args()
    if not Workspace(args.workspace).list(KIND):
        raise SystemExit(f"no steering study in {args.workspace}: run `sae-core steer study -w "
                         f"{args.workspace}` (or `sae-core demo`) first")
    from playwright.sync_api import sync_playwright

    prompts = iter(q.prompt for q in chat_prompts(args.rounds + 1, seed=7, triggered=True))
    times: dict[str, list[float]] = {"prompt": [], "alpha": []}
    with streamlit_server(args.workspace) as url:
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
            timed(page, submit, lambda: box.fill(next(prompts)))  # untimed warm-up
            for _ in range(args.rounds):
                times["prompt"].append(timed(page, submit, lambda: box.fill(next(prompts))))
                times["alpha"].append(timed(page, lambda: thumb.press("ArrowLeft")))
            browser.close()
    print(f"Steering page reruns in Chromium, {args.rounds} rounds, 20 new tokens per column (the page's default) "
          f"(load {os.getloadavg()[0]:.2f})")
    report_reruns(times, {"prompt": 6, "alpha": 4}, {"rounds": args.rounds, "tokens": 20, "load": os.getloadavg()[0],
                                                     "seconds": times}, "steering_page.json")


if __name__ == "__main__":
    main()
