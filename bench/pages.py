"""Every page's first open and its main control's rerun, in the browser (issue #28 targets: every
page opens in under 3 s, every control reruns in under 1.5 s median).

Starts ``streamlit run app.py`` on a workspace holding the full demo (``bench.browser``), then in
headless Chromium opens each of the seven pages in turn, each by a fresh navigation (a new session;
the server's caches stay warm from the pages before), timed until the script is idle with the page's
main heading shown. The very first open also imports torch and loads the sidebar's model: it is
reported as the cold open, apart from the warm first opens (Home is opened a second time, warm).
Each page's main control is then used R times, each timed in the page's own clock from the click or
key press until the rerun it started is idle (``bench.browser.timed``):

- Home: the page reloaded (it has no control; a reload is how its workspace listing is refreshed),
  timed as an open;
- Activations: another stored activation set (falls back to a new token count with one store);
- Sampled-SAE: the scoring-rule filter (entropy off, on, ...) over its five charts;
- Features: another feature number (the index's most active features, a new one each round); where
  the SAE it opens first has no index (the full demo's newest SAE is universality's), an SAE with
  one is chosen first, untimed, and the row says so;
- Steering & switches: the safety-switch toggle (its column off, on, ...);
- Universality: another measure's null distribution;
- Circuits: another task's circuit graph.

Writes ``bench/results/pages.json`` (or ``--json PATH``).

    .venv/bin/python bench/pages.py [--workspace /tmp/demo_ws] [--rounds 5] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.browser import CHROMIUM, REPO, compile_sources, open_timed, streamlit_server, timed  # noqa: E402
from sae_core.circuits.job import KIND as CIRCUITS  # noqa: E402
from sae_core.steering.study import KIND as STEERING  # noqa: E402
from sae_core.universality.job import KIND as UNIVERSALITY  # noqa: E402
from sae_core.workspace import Workspace  # noqa: E402

OPEN_TARGET_S, RERUN_TARGET_S = 3.0, 1.5
SETTLE_MS = 1000
# (prepare, act) for round i: prepare (typing, opening a dropdown) runs before the clock starts
Round = tuple[Callable[[], None] | None, Callable[[], None]]


@dataclass(frozen=True)
class Page:
    title: str  # as in the navigation
    path: str  # the URL path of its st.Page
    heading: str  # its st.title
    control: str  # what the timed reruns change
    round: Callable[..., Round] | None  # (page, main, i, workload) -> Round for round i


def _in_widget(main, label: str):
    """The element (widget) whose label is ``label``."""
    return main.get_by_test_id("stElementContainer").filter(has=main.page.get_by_text(label, exact=True))


def _segment(main, label: str, option: str):
    """Option ``option`` of segmented control ``label`` (its buttons are radios when single-select)."""
    return _in_widget(main, label).locator("button").filter(has_text=option)


def _choose(main, label: str) -> Round:
    """Selectbox ``label``: open its list (untimed), then click an option other than the chosen one."""
    options = main.page.get_by_role("listbox", name=label).get_by_role("option")

    def prepare():
        box = main.get_by_role("combobox", name=label)
        box.click()
        if not options.count():  # a click on the field sometimes only focuses it
            box.press("ArrowDown")
        options.first.wait_for()

    def act():
        n = options.count()
        options.nth(next(k for k in range(n) if options.nth(k).get_attribute("aria-selected") != "true")).click()
    return prepare, act


@dataclass(frozen=True)
class Workload:
    """What the controls pick from, read from the workspace before the server starts."""
    stores: int  # activation stores: with one, the Activations page's control is a new token count
    sae: str | None  # the newest SAE with a feature index, at the sweep's model and hook
    first_sae_indexed: bool  # whether that is the newest SAE there (the one the Features page opens)
    features: tuple[int, ...]  # its index's most active features


def activations(page, main, i: int, w: Workload) -> Round:
    if w.stores > 1:
        return _choose(main, "Store")
    tokens = main.get_by_role("spinbutton", name="Tokens")
    return lambda: tokens.fill(str(20_000 + 1_000 * (i + 1))), lambda: tokens.press("Enter")


def sampled_sae(page, main, i: int, w: Workload) -> Round:
    return None, lambda: _segment(main, "Scoring rule", "entropy").click()  # off, on, off, ...


def features(page, main, i: int, w: Workload) -> Round:
    box = main.get_by_role("spinbutton", name="Feature")
    if i == 0 and not box.count() and w.sae:  # the SAE opened first has no index: choose one that has (untimed)
        prepare, _ = _choose(main, "SAE")
        prepare()
        option = page.get_by_role("listbox", name="SAE").get_by_role("option").filter(has_text=w.sae)
        timed(page, option.click)
    j = w.features[i % len(w.features)] if w.features else i + 1
    return lambda: box.fill(str(j)), lambda: box.press("Enter")


def steering(page, main, i: int, w: Workload) -> Round:
    return None, lambda: main.get_by_text("switch", exact=True).click()  # the column off, on, ...


def universality(page, main, i: int, w: Workload) -> Round:
    return _choose(main, "Null distribution of")


def circuits(page, main, i: int, w: Workload) -> Round:
    buttons = _in_widget(main, "Show").locator("button")
    return None, lambda: buttons.nth((i + 1) % max(1, buttons.count() - 1)).click()  # the tasks, not the union


PAGES = [
    # Home has no control; its demo panel reruns every 2 s, which would end a timed rerun early, so
    # its workspace listing is refreshed the way a user does: the page reloaded (a new session)
    Page("Home", "", "SAE Studio", "reload (workspace listing)", None),
    Page("Activations", "activations", "Activations", "stored activation set", activations),
    Page("Sampled-SAE", "sampled_sae", "Sampled-SAE: the l trade-off", "scoring-rule filter", sampled_sae),
    Page("Features", "features", "Feature browser", "feature number", features),
    Page("Steering & switches", "steering", "Steering & switches", "switch toggle", steering),
    Page("Universality", "universality", "Feature universality", "null-distribution measure", universality),
    Page("Circuits", "circuits", "Circuits", "task", circuits),
]


def _check_workspace(ws: Workspace) -> None:
    missing = [k for k in ("activations", "sweep", "feature_index", STEERING, UNIVERSALITY, CIRCUITS) if not ws.list(k)]
    if missing:
        raise SystemExit(f"{ws.root} lacks {', '.join(missing)}: run `sae-core demo -w {ws.root}` first (every "
                         "page needs its part of the full demo)")


def workload(ws: Workspace, n: int = 12) -> Workload:
    """The workspace's activation stores, the newest SAE with a feature index at the sweep's model and
    hook, and the ``n`` most active features of that index."""
    import numpy as np

    from sae_core.features.index import FeatureIndex

    sweep = ws.list("sweep")[0]
    # an index names its SAE by artifact name (the demo) or by directory (the app's builds; a copied
    # workspace keeps the old directory)
    indexed = {Path(a.meta.get("sae", "")).name: a for a in ws.list("feature_index")}
    saes = [a.name for a in ws.list("sae") if a.model == sweep.model and a.hook == sweep.hook]
    sae = next((name for name in saes if name in indexed), None)
    features = ()
    if sae is not None:
        count = np.asarray(FeatureIndex.open(indexed[sae].path).column("count"))
        features = tuple(int(j) for j in np.argsort(-count, kind="stable")[:n])
    # the page lists SAEs with an index first (sae_app.feature_cache.list_saes), so it opens on one
    return Workload(stores=len(ws.list("activations")), sae=sae, first_sae_indexed=sae is not None, features=features)


def measure(url: str, rounds: int, w: Workload) -> tuple[float, list[dict]]:
    """The cold open (Home, first thing after the server starts) and one row per page."""
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        main = page.get_by_test_id("stMain")
        cold = open_timed(page, f"{url}/{PAGES[0].path}", PAGES[0].heading)
        for p in PAGES:
            opened = open_timed(page, f"{url}/{p.path}", p.heading)
            # the charts' code and data load after the script is idle: reruns are timed once they have
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(SETTLE_MS)
            times = []
            for i in range(rounds):
                if p.round is None:
                    times.append(open_timed(page, f"{url}/{p.path}", p.heading))
                else:
                    prepare, act = p.round(page, main, i, w)
                    times.append(timed(page, act, prepare))
            control = "token count (one store)" if p.round is activations and w.stores < 2 else p.control
            if p.round is features and not w.first_sae_indexed:
                control += " (after choosing an SAE with an index: the first one shown has none)"
            rows.append({"page": p.title, "open_s": opened, "control": control, "rerun_s": times,
                         "rerun_target_s": RERUN_TARGET_S if p.round else OPEN_TARGET_S})
            print(f"  {p.title}: open {opened:.2f} s, {control} {', '.join(f'{t:.2f}' for t in times)}", flush=True)
        browser.close()
    return cold, rows


def verdict(row: dict) -> str:
    slow = [f"open > {OPEN_TARGET_S:g} s"] if row["open_s"] > OPEN_TARGET_S else []
    if row["rerun_s"] and statistics.median(row["rerun_s"]) > row["rerun_target_s"]:
        slow.append(f"median > {row['rerun_target_s']:g} s")
    return "FAIL (" + ", ".join(slow) + ")" if slow else "PASS"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workspace", type=Path, default=Path("/tmp/demo_ws"), help="a workspace holding the full demo")
    p.add_argument("--rounds", type=int, default=5, help="reruns of each page's control")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "pages.json")
    p.add_argument("--no-bytecode", action="store_true", help="let the server compile every module it imports "
                   "(this machine's PYTHONDONTWRITEBYTECODE), instead of reading bytecode compiled beforehand")
    args = p.parse_args()
    ws = Workspace(args.workspace)
    _check_workspace(ws)
    w = workload(ws)
    if not args.no_bytecode:
        compile_sources(REPO / "bench" / "results" / "pycache")
    load_before = os.getloadavg()[0]
    with streamlit_server(args.workspace) as url:
        cold, rows = measure(url, args.rounds, w)
    load = os.getloadavg()[0]
    for r in rows:
        r["verdict"] = verdict(r)
    print(f"\nPages in Chromium, {args.rounds} rounds per control (load {load_before:.2f} before, {load:.2f} after); "
          f"targets: first open < {OPEN_TARGET_S:g} s, median rerun < {RERUN_TARGET_S:g} s (Home's reload: "
          f"< {OPEN_TARGET_S:g} s)")
    print(f"cold first open (Home, the server's first run: torch import, model load): {cold:.2f} s (no target); "
          + ("modules compiled on import" if args.no_bytecode else "bytecode compiled beforehand"))
    print(f"{'page':20} {'first open s':>12}  {'control':27} {'median s':>8} {'max s':>6}  verdict")
    for r in rows:
        print(f"{r['page']:20} {r['open_s']:12.2f}  {r['control'][:27]:27} {statistics.median(r['rerun_s']):8.2f} "
              f"{max(r['rerun_s']):6.2f}  {r['verdict']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"workspace": str(args.workspace), "rounds": args.rounds, "cold_open_s": cold,
                                     "bytecode": not args.no_bytecode,
                                     "load_before": load_before, "load_after": load, "pages": rows}, indent=2))


if __name__ == "__main__":
    main()
