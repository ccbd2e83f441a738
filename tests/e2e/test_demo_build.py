"""A newcomer's first visit: the home page answers on an empty workspace, the demo builds in view,
a crash of the build is shown with a retry that resumes it, and every page fills in as its step ends.

This runs first (the page tests read the workspace it builds: ``demo_built``). The build is the demo
at its small profile, started by the home page's button as a user would (``make app`` starts it the
same way, from the shell).
"""
from __future__ import annotations

import os
import signal
import time

import pytest
from playwright.sync_api import expect

from sae_core.demo import DEMO_STEPS, read_state
from sae_core.workspace import Workspace
from tests.e2e.conftest import wait_for_demo
from tests.helpers import check_and_shoot, open_page, wait_idle

pytestmark = pytest.mark.e2e

# each page, the demo step whose artifacts it shows, and what it shows once they are there
PAGES = {
    "activations": ("activations", "Mean token norm"),
    "sampled_sae": ("sweep", "Training curves"),
    "features": ("feature_index", "Direct logit effects"),
    "steering": ("steering", "Measured on held-out prompts"),
    "universality": ("universality", "Matched pairs"),
    "circuits": ("circuits", "Circuit graph"),
}


def _step_of(kind: str) -> int:
    return next(i for i, s in enumerate(DEMO_STEPS) if kind in s.kinds) + 1


def _wait_until(predicate, limit_s: float, what: str):
    deadline = time.monotonic() + limit_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {limit_s:.0f} s")
        time.sleep(0.5)
    return value


@pytest.mark.timeout(60 * 60)  # it watches the whole build (about 3 min when idle)
def test_the_demo_builds_in_view_and_every_page_fills_in(browser, page, app_url, workspace_dir, screenshot_dir):
    n = len(DEMO_STEPS)
    assert read_state(workspace_dir).state == "absent"  # a fresh clone: nothing built yet
    open_page(page, app_url)
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name="SAE Studio", exact=True)).to_be_visible()
    expect(main).to_contain_text("Where to start")
    check_and_shoot(page, screenshot_dir, "home-empty")

    main.get_by_role("button", name="Build the demo workspace").click()
    expect(main).to_contain_text("Building the demo workspace", timeout=60_000)
    expect(main.get_by_test_id("stProgress").first).to_be_visible()
    check_and_shoot(page, screenshot_dir, "home-building")

    # a second tab on the Circuits page (the last step): it says what it waits for, then fills in by itself
    circuits = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    circuits.set_default_timeout(60_000)
    open_page(circuits, f"{app_url}/circuits")
    step = _step_of("circuits")
    expect(circuits.get_by_test_id("stMain")).to_contain_text(f"Being built: step {step} of {n}, about")
    check_and_shoot(circuits, screenshot_dir, "circuits-being-built")

    # the build crashes (killed) during step 2: the home page says so and offers a retry
    _wait_until(lambda: read_state(workspace_dir).n_done >= 1, 600, "the first demo step")
    harvested = Workspace(workspace_dir).list("activations")[0].created
    os.killpg(read_state(workspace_dir).pid, signal.SIGKILL)
    _wait_until(lambda: read_state(workspace_dir).state == "stopped", 30, "the build's stop")
    expect(main).to_contain_text("The demo build stopped at step", timeout=30_000)
    expect(main).to_contain_text("process ended before it finished")
    check_and_shoot(page, screenshot_dir, "home-build-stopped")
    main.get_by_role("button", name="Retry the build (finished steps are kept)").click()
    expect(main).to_contain_text("Building the demo workspace", timeout=60_000)
    # resumed, not restarted: step 1's harvest is found, not made again
    _wait_until(lambda: read_state(workspace_dir).n_done >= 1, 300, "the resumed build's first step")
    assert [a.created for a in Workspace(workspace_dir).list("activations")] == [harvested]

    wait_for_demo(workspace_dir)
    state = read_state(workspace_dir)
    assert [s.state for s in state.steps] == ["done"] * n
    expect(main).to_contain_text("Demo workspace built (small profile", timeout=30_000)
    check_and_shoot(page, screenshot_dir, "home-built")

    # the Circuits tab filled in without a reload
    cm = circuits.get_by_test_id("stMain")
    expect(cm).to_contain_text(PAGES["circuits"][1], timeout=120_000)
    expect(cm).not_to_contain_text("Being built")
    circuits.context.close()

    for path, (kind, shows) in PAGES.items():
        open_page(page, f"{app_url}/{path}")
        expect(main).to_contain_text(shows, timeout=120_000)
        expect(main).not_to_contain_text("Being built")
        check_and_shoot(page, screenshot_dir, f"{path}-after-build")
        wait_idle(page)
