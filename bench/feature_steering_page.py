"""Feature steering on the Features page, timed in the browser (issue #32 target: six columns
regenerate in under 2 s on the 2-core CPU).

Starts ``streamlit run app.py`` on a workspace holding an SAE of zoo:tiny-a with its feature index
(the demo's), opens the Features page on the index's most active feature in headless Debian
Chromium, and times reruns as the user sees them, from the key press until the script is idle
again (a MutationObserver in the page):

a new list of five strengths (Enter), so all six columns (plain + five) regenerate (the columns
are cached per input, so every round uses strengths not seen before), alternating between adding
the decoder row and clamping the activation.

The first rerun after opening is not timed. Writes ``bench/results/feature_steering_page.json``.

    .venv/bin/python bench/feature_steering_page.py --workspace DIR [--rounds 8]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.browser import CHROMIUM, OBSERVE, STATE, report_reruns, streamlit_server, timed  # noqa: E402
from sae_core.features.index import FeatureIndex  # noqa: E402
from sae_core.workspace import Workspace  # noqa: E402

HOOK = ("zoo:tiny-a", "blocks.1.hook_resid_post")


def _feature(ws: Workspace) -> int:
    saes = {a.name for a in ws.list("sae") if (a.model, a.hook) == HOOK}
    arts = [a for a in ws.list("feature_index") if a.meta.get("sae") in saes or
            Path(str(a.meta.get("sae", ""))).name in saes]
    if not arts:
        raise SystemExit(f"no feature index of a zoo:tiny-a SAE in {ws.root}: run `sae-core demo -w {ws.root}` first")
    return int(FeatureIndex.open(arts[0].path).column("count").argmax())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workspace", type=Path, required=True, help="a workspace holding an indexed zoo:tiny-a SAE")
    p.add_argument("--rounds", type=int, default=8)
    args = p.parse_args()
    feature = _feature(Workspace(args.workspace))
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {"add": [], "clamp": []}
    with streamlit_server(args.workspace) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/features")
        page.wait_for_selector(f"{STATE}[data-test-script-state='notRunning']", timeout=180_000)
        number = page.get_by_role("spinbutton", name="Feature")
        number.fill(str(feature))
        number.press("Enter")
        page.get_by_role("heading", name=f"Feature {feature}").wait_for(timeout=180_000)
        page.wait_for_timeout(300)
        page.wait_for_selector(f"{STATE}[data-test-script-state='notRunning']", timeout=180_000)
        page.locator("div.gen").nth(5).wait_for(timeout=180_000)
        page.evaluate(OBSERVE)
        box = page.get_by_role("textbox", name="Strengths (one column each)")
        n = 0

        def strengths():
            nonlocal n
            n += 1
            box.fill(", ".join(f"{s * (1 + n / 100):.4g}" for s in (-1, 1, 2, 4, 8)))
        timed(page, lambda: box.press("Enter"), strengths)  # untimed warm-up
        for i in range(2 * args.rounds):
            mode = ("add", "clamp")[i % 2]
            if i:
                page.get_by_text("clamp activation to" if mode == "clamp" else "add α × decoder row",
                                 exact=True).click()
                page.wait_for_timeout(300)
                page.wait_for_selector(f"{STATE}[data-test-script-state='notRunning']")
                box = page.get_by_role("textbox", name="Strengths (one column each)")
            times[mode].append(timed(page, lambda: box.press("Enter"), strengths))
            assert page.locator("div.gen").count() == 6
        browser.close()
    print(f"Features page, steering feature {feature}: reruns in Chromium, {args.rounds} rounds, six columns of "
          f"20 new tokens (load {os.getloadavg()[0]:.2f})")
    report_reruns(times, {name: 6 for name in times}, {"rounds": args.rounds, "feature": feature, "tokens": 20,
                                                       "load": os.getloadavg()[0], "seconds": times},
                  "feature_steering_page.json", first="edit")


if __name__ == "__main__":
    main()
