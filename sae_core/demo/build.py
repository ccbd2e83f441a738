"""Building the demo: in this process (``sae-core demo``) or in a background one the app watches.

``build_demo`` runs every step in order under the workspace's build lock and records its progress
(``progress`` module). ``start_background`` starts ``sae-core demo`` as a detached process at a
lower CPU priority, so the app stays responsive on a 2-core machine while it builds; it is what
``make app`` and the app's "Build" and "Retry" buttons call. Steps resume, so a second start after
a crash or a stop picks up where the first left off.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from sae_core.demo.progress import LOG_FILE, BuildState, DemoError, Recorder, StepState, build_dir, read_state
from sae_core.demo.steps import DEMO_STEPS, DemoStep, Progress, profile_named
from sae_core.errors import SAECoreError
from sae_core.workspace import Artifact, Workspace

NICENESS = 10  # below the app's server: its pages answer while the build runs


def build_demo(ws: Workspace, on_step: Callable[[DemoStep], Progress | None] | None = None,
               profile: str | None = None) -> list[Artifact]:
    """Run every demo step in order (each returns at once when its artifact exists); ``on_step(step)``
    may return a progress callback for it. Raises ``DemoError`` while another build of this
    workspace runs; a step's error is recorded in the progress file and raised."""
    p = profile_named(profile)
    rec = Recorder(ws.root, [StepState(s.name, s.kinds, e) for s, e in zip(DEMO_STEPS, p.expected_s)], p.name)
    rec.acquire()
    arts = []
    try:
        for i, step in enumerate(DEMO_STEPS):
            rec.start(i)
            shown = on_step(step) if on_step else None

            def on_progress(done, total, i=i, shown=shown):
                rec.update(i, done, total)
                if shown is not None:
                    shown(done, total)
            try:
                arts.append(step.run(ws, p, on_progress))
            except BaseException as e:  # KeyboardInterrupt too: the page says the build stopped and why
                rec.fail(i, _describe(e))
                raise
            rec.finish(i)
        rec.complete()
    finally:
        rec.release()
    return arts


def _describe(e: BaseException) -> str:
    if isinstance(e, SAECoreError):
        return str(e)
    if isinstance(e, KeyboardInterrupt):
        return "interrupted (Ctrl-C or a stop signal); retry to resume"
    return f"{type(e).__name__}: {e}"


def start_background(ws: Workspace, profile: str | None = None) -> BuildState:
    """Start the demo build of ``ws`` in a detached, lower-priority process unless one runs or the
    demo is complete; returns the build's state as the caller should show it."""
    state = read_state(ws.root)
    if state.state in ("running", "done"):
        return state
    p = profile_named(profile)
    d = build_dir(ws.root)
    d.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "sae_core.cli", "demo", "--workspace", str(ws.root), "--profile", p.name, "--quiet"]
    with open(d / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=lambda: os.nice(NICENESS),
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return _wait_until_started(ws.root, proc)


def _wait_until_started(root: Path, proc: subprocess.Popen, timeout_s: float = 60.0) -> BuildState:
    """The state once the new process has taken the lock (or has exited: its error is in the log)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_state(root)
        if state.state == "running" and state.pid == proc.pid:
            return state
        if (code := proc.poll()) is not None:
            state = read_state(root)
            if state.state in ("running", "done", "failed"):
                return state  # another build held the lock, or it finished at once
            raise DemoError(f"the demo build exited with code {code} before it started; see {build_dir(root) / LOG_FILE}")
        time.sleep(0.2)
    return read_state(root)
