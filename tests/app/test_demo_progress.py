"""The demo build as the app shows it: live progress on the home page, "being built" on a page
whose step is pending, a crash with its message and a retry, a start button on an empty workspace."""
from __future__ import annotations

from dataclasses import asdict
from types import SimpleNamespace

import pytest

import sae_app.demo_build as demo_build
import sae_core.demo.progress as progress
from sae_core.demo import DEMO_STEPS, PROFILES
from sae_core.demo.progress import StepState
from sae_core.io import atomic_write_json
from tests.helpers import app_test, page_errors

N = len(DEMO_STEPS)
NOW = 1_800_000_000.0  # the clock the build's estimate reads (fixed: the estimate must not drift)


def _write_state(root, state: str, n_done: int, *, fraction=0.5, error=None, running_for=30.0):
    """A progress file as a build would leave it: ``n_done`` steps done (each as fast as expected),
    the next one running (or failed) for ``running_for`` seconds at ``fraction``."""
    now = NOW
    steps = []
    for i, (s, e) in enumerate(zip(DEMO_STEPS, PROFILES["full"].expected_s)):
        if i < n_done:
            steps.append(StepState(s.name, s.kinds, e, "done", 1.0, now - 100, float(e)))
        elif i == n_done:
            steps.append(StepState(s.name, s.kinds, e, "failed" if state == "failed" else "running",
                                   fraction, now - running_for))
        else:
            steps.append(StepState(s.name, s.kinds, e))
    atomic_write_json(root / "demo-build" / "progress.json", {
        "state": state, "profile": "full", "pid": 12345, "error": error, "updated": now,
        "steps": [asdict(s) for s in steps]})


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    monkeypatch.setattr(progress, "time", SimpleNamespace(time=lambda: NOW))


@pytest.fixture
def live_lock(monkeypatch):
    """The build's process is alive (it holds the lock)."""
    monkeypatch.setattr(progress, "lock_held", lambda root: True)


def test_home_shows_the_running_build_step_by_step(workspace, live_lock):
    _write_state(workspace.root, "running", 2, fraction=0.25, running_for=30.0)
    at = app_test().run()
    assert not at.exception and not page_errors(at)
    text = " ".join(m.value for m in at.markdown)
    # step 3 runs at its own pace (30 s for a quarter: 90 s more), then the later steps at the expected pace
    assert f"**Building the demo workspace** in the background: step 3 of {N} ({DEMO_STEPS[2].name})" in text
    left = 90 + sum(PROFILES["full"].expected_s[3:])
    assert f"about {round(left / 60)} min left" in text
    assert f"3. {DEMO_STEPS[2].name} (25%)" in text and f"1. {DEMO_STEPS[0].name} ({PROFILES['full'].expected_s[0]} s)" in text
    done = sum(PROFILES["full"].expected_s[:2]) + 0.25 * PROFILES["full"].expected_s[2]
    assert at.get("progress")[0].value == pytest.approx(100 * done / sum(PROFILES["full"].expected_s), abs=1)  # percent


@pytest.mark.parametrize("page, kind", [("views/circuits.py", "circuits"), ("views/universality.py", "universality"),
                                        ("views/steering.py", "steering"), ("views/sampled_sae.py", "sweep"),
                                        ("views/activations.py", "activations")])
def test_a_page_whose_step_is_pending_says_it_is_being_built(workspace, live_lock, page, kind):
    _write_state(workspace.root, "running", 0, fraction=0.0, running_for=0.0)
    at = app_test().run()
    at.switch_page(page).run()
    assert not at.exception and not page_errors(at)
    step = next(i for i, s in enumerate(DEMO_STEPS) if kind in s.kinds) + 1
    minutes = round(sum(PROFILES["full"].expected_s[:step]) / 60)
    assert any(f"Being built: step {step} of {N}, about {max(1, minutes)} min left." in i.value for i in at.info), \
        [i.value for i in at.info]
    # no offer to build it beside the build that makes it (the pages' own forms stay: Run sweep, Harvest)
    assert [b.key for b in at.button if b.key.endswith("_build")] == []


def test_a_crashed_build_is_shown_with_its_message_and_a_retry(workspace, monkeypatch):
    _write_state(workspace.root, "failed", 3, error="RuntimeError: disk full")
    started = []
    monkeypatch.setattr(demo_build, "start_background", lambda ws: started.append(ws.root))
    at = app_test().run()
    assert not at.exception
    assert f"The demo build stopped at step 4 of {N}: RuntimeError: disk full" in page_errors(at)
    at.button(key="demo_retry_home").click().run()
    assert started == [workspace.root]
    # a page whose step was not reached says so too, and still offers its own build
    at.switch_page("views/circuits.py").run()
    assert f"The demo build stopped at step 4 of {N}: RuntimeError: disk full" in page_errors(at)
    assert at.button(key="circ_build").label == "Find the circuits on zoo:tiny-b"


def test_a_build_whose_process_died_reads_as_stopped(workspace):
    _write_state(workspace.root, "running", 1)  # nobody holds the lock
    at = app_test().run()
    assert any(e.startswith(f"The demo build stopped at step 2 of {N}: the build's process ended before it finished")
               for e in page_errors(at))
