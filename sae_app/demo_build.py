"""The demo build as the app shows it: its live progress on the home page, a "being built" notice on
every page whose content a pending step makes, a crash with its message and a retry button.

The build runs in its own process (``sae_core.demo.start_background``: ``make app`` starts it, the
buttons here start it again); this module only reads its progress file, every ``REFRESH_S`` inside
a fragment, and reruns the whole app when a step ends so that the pages list the new artifacts.
"""
from __future__ import annotations

import time

import streamlit as st

from sae_app import listing
from sae_core.demo import DEMO_STEPS, BuildState, read_state, start_background
from sae_core.errors import SAECoreError
from sae_core.workspace import Workspace

REFRESH_S = 2.0
ICONS = {"done": ":material/check_circle:", "running": ":material/progress_activity:",
         "failed": ":material/error:", "pending": ":material/schedule:"}


def minutes(seconds: float | None) -> str:
    """'about 4 min left' / 'under a minute left' (the build's own estimate)."""
    if seconds is None:
        return ""
    return "under a minute left" if seconds < 60 else f"about {round(seconds / 60)} min left"


def headline(state: BuildState) -> str:
    """'step 3 of 7 (feature indexes ...), 42% done, about 4 min left'."""
    i = state.current if state.current is not None else state.n_done
    step = state.steps[min(i, state.n_steps - 1)]
    return (f"step {i + 1} of {state.n_steps} ({step.name}), {100 * state.fraction:.0f}% done, "
            f"{minutes(state.seconds_left())}")


def _start(root: str) -> None:
    try:
        start_background(Workspace(root))
    except SAECoreError as e:
        st.session_state["demo_start_error"] = str(e)


def _retry(state: BuildState, root: str, key: str) -> None:
    st.error(f"The demo build stopped at step {(state.current or 0) + 1} of {state.n_steps}: {state.error}",
             icon=":material/error:")
    st.button("Retry the build (finished steps are kept)", key=key, on_click=_start, args=(root,), type="primary")


def home_panel(root: str) -> None:
    """The home page's view of the build: live progress (refreshed every ``REFRESH_S`` while it
    runs, and only then: an idle app stays idle), a crash and its retry, or a start button."""
    if err := st.session_state.pop("demo_start_error", None):
        st.error(err)
    state = read_state(root)
    if state.building:
        _home_live(root)
    elif state.state in ("failed", "stopped"):
        _retry(state, root, "demo_retry_home")
    elif state.state == "absent" and missing_kinds(root):
        st.info("This workspace has no demo yet: its artifacts (activations, a Sampled-SAE sweep, feature "
                "indexes, steering, universality and circuits studies) build in the background in about "
                "9 minutes on a 2-core CPU, and each page fills in as its step ends.", icon=":material/build:")
        st.button("Build the demo workspace", key="demo_start", on_click=_start, args=(root,), type="primary")
    elif state.state == "done":
        took = sum(s.seconds or 0 for s in state.steps)
        st.caption(f":material/check_circle: Demo workspace built ({state.profile} profile, "
                   f"{took / 60:.1f} min of steps).")


@st.fragment(run_every=REFRESH_S)
def _home_live(root: str) -> None:
    state = read_state(root)
    if not state.building or _step_ended(root, state):
        listing.changed()
        st.rerun(scope="app")  # a step ended, or the build did: every listing on the page anew
    st.markdown(f"**Building the demo workspace** in the background: {headline(state)}.")
    st.progress(state.fraction)
    st.markdown("  \n".join(_step_line(i, s) for i, s in enumerate(state.steps)))
    st.caption("Every page shows its part as soon as its step is done. Closing this tab does not stop the "
               "build; a second `make app` resumes it.")


def _step_line(i: int, s) -> str:
    extra = {"done": f" ({s.seconds:.0f} s)" if s.seconds is not None else "",
             "running": f" ({100 * s.fraction:.0f}%)"}.get(s.state, "")
    return f"{ICONS[s.state]} {i + 1}. {s.name}{extra}"


def _step_ended(root: str, state: BuildState) -> bool:
    """Whether the count of finished steps changed since this session last looked."""
    key = f"demo_done::{root}"
    before, st.session_state[key] = st.session_state.get(key, state.n_done), state.n_done
    return before != state.n_done


def missing_kinds(root: str) -> list[str]:
    """The demo's artifact kinds this workspace has none of."""
    have = {a.kind for a in listing.list_artifacts(root, None)}
    return [k for s in DEMO_STEPS for k in s.kinds if k not in have]


def wait_for(root: str, kind: str) -> None:
    """On a page with nothing of ``kind`` to show: while the demo build still makes it, say so with
    its progress and stop the page here (``notice``)."""
    if notice(root, kind):
        st.stop()


def notice(root: str, kind: str) -> bool:
    """Where artifacts of ``kind`` are missing and the demo build makes them: show its progress, or
    its crash with the retry button, live (the app reruns when the build's state changes or the
    step ends, from this tab or another). True while the build runs (the page has nothing to add);
    False otherwise (after a crash the page goes on to offer its own build)."""
    if not root:
        return False
    state = read_state(root)
    if state.step_making(kind) is None:
        return False
    _page_fragment(root, kind, state.state)
    return state.building


@st.fragment(run_every=REFRESH_S)
def _page_fragment(root: str, kind: str, seen: str) -> None:
    state = read_state(root)
    i = state.step_making(kind)
    if i is None or state.state != seen:
        listing.changed()
        st.rerun(scope="app")
    if not state.building:
        _retry(state, root, f"demo_retry_{kind}")
        return
    until = state.seconds_until(i) or 0.0
    st.info(f"**Being built: step {i + 1} of {state.n_steps}, about {max(1, round(until / 60))} min left.** "
            f"This page shows its results when step {i + 1} ({state.steps[i].name}) is done; the home page "
            "shows every step.", icon=":material/hourglass_top:")
    st.progress(state.fraction, text=headline(state))
    st.caption(f"checked {time.strftime('%H:%M:%S')}")
