"""The demo build's progress, as a file in the workspace that any process can read.

The build writes ``<workspace>/demo-build/progress.json`` (atomically) at every step's start and
end and at most once a second in between: each step's state, fraction and seconds, the running
step's start, the error of a crash. While it runs, the builder holds an exclusive ``flock`` on
``build.lock`` beside it, so a reader tells a live build from one whose process died (killed, out
of memory): the file says "running" but nobody holds the lock. The lock also keeps two builds of
one workspace from running at once.

Time left: each profile carries the seconds its steps took on the idle 2-core machine; the steps
already done in this build say how much faster or slower this machine is (steps that returned at
once because their artifact existed are left out of that ratio), and the running step's own
fraction says how far it is.
"""
from __future__ import annotations

import fcntl
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from sae_core.errors import SAECoreError
from sae_core.io import atomic_write_json, read_json

DIR = "demo-build"
PROGRESS_FILE = "progress.json"
LOCK_FILE = "build.lock"
LOG_FILE = "build.log"
WRITE_EVERY_S = 1.0
PREBUILT = 0.2  # a step done in under this share of its expected time had its artifact already


class DemoError(SAECoreError):
    """A demo build that cannot start, or a profile that does not exist."""


@dataclass(frozen=True)
class StepState:
    name: str
    kinds: tuple[str, ...]
    expected_s: float
    state: str = "pending"  # pending | running | done | failed
    fraction: float = 0.0
    started: float | None = None
    seconds: float | None = None  # when done


@dataclass(frozen=True)
class BuildState:
    """One read of the build. ``state``: absent (never started here), running, done, failed, or
    stopped (its process ended without finishing, e.g. killed)."""
    state: str
    steps: tuple[StepState, ...] = ()
    profile: str = "full"
    pid: int | None = None
    error: str | None = None
    updated: float = 0.0

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @property
    def current(self) -> int | None:
        """0-based index of the step running (or failed), else None."""
        return next((i for i, s in enumerate(self.steps) if s.state in ("running", "failed")), None)

    @property
    def n_done(self) -> int:
        return sum(s.state == "done" for s in self.steps)

    @property
    def fraction(self) -> float:
        """The whole build's share done, by expected time."""
        total = sum(s.expected_s for s in self.steps) or 1.0
        return sum(s.expected_s * (1.0 if s.state == "done" else s.fraction) for s in self.steps) / total

    @property
    def building(self) -> bool:
        return self.state == "running"

    def step_making(self, kind: str) -> int | None:
        """0-based index of the not-yet-done step that makes artifacts of ``kind``, else None."""
        return next((i for i, s in enumerate(self.steps) if kind in s.kinds and s.state != "done"), None)

    def seconds_left(self, now: float | None = None) -> float | None:
        """About how long the build still takes (None when it is not running)."""
        left = self._left_per_step(now)
        return None if left is None else sum(left)

    def seconds_until(self, i: int, now: float | None = None) -> float | None:
        """About how long until step ``i`` (0-based) is done (None when the build is not running)."""
        left = self._left_per_step(now)
        return None if left is None else sum(left[:i + 1])

    def _left_per_step(self, now: float | None) -> list[float] | None:
        if self.state != "running":
            return None
        now = time.time() if now is None else now
        timed = [s for s in self.steps if s.state == "done" and s.seconds >= PREBUILT * s.expected_s]
        speed = (sum(s.seconds for s in timed) / sum(s.expected_s for s in timed)) if timed else 1.0
        left = []
        for s in self.steps:
            if s.state == "running":
                elapsed = now - (s.started or now)
                if s.fraction >= 0.1:  # its own pace, once it has one
                    left.append(elapsed * (1 - s.fraction) / s.fraction)
                else:
                    left.append(max(s.expected_s * speed - elapsed, 0.1 * s.expected_s * speed))
            else:
                left.append(s.expected_s * speed if s.state == "pending" else 0.0)
        return left


def build_dir(root: Path) -> Path:
    return Path(root) / DIR


def read_state(root: Path) -> BuildState:
    """The build of the workspace at ``root`` as it stands now."""
    path = build_dir(root) / PROGRESS_FILE
    if not path.exists():
        return BuildState("absent")
    try:
        raw = read_json(path)
        state = BuildState(**{**raw, "steps": tuple(StepState(**{**s, "kinds": tuple(s["kinds"])})
                                                    for s in raw["steps"])})
    except (SAECoreError, TypeError, KeyError, ValueError) as e:
        return BuildState("failed", error=f"the build's progress file {path} is unreadable ({e}); retry the build")
    if state.state == "running" and not lock_held(root):
        log = build_dir(root) / LOG_FILE
        return replace(state, state="stopped",
                       error="the build's process ended before it finished (killed, or out of memory?)"
                             + (f"; its log is {log}" if log.exists() else "") + ". Retry: finished steps are kept.")
    return state


def lock_held(root: Path) -> bool:
    """Whether a build process holds the workspace's build lock now."""
    path = build_dir(root) / LOCK_FILE
    if not path.exists():
        return False
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


@dataclass
class Recorder:
    """Writes the progress of one build; the builder holds the lock while it lives (``acquire``)."""
    root: Path
    steps: list[StepState]
    profile: str
    _lock: object = None
    _last_write: float = 0.0
    _error: str | None = None
    _state: str = "running"

    def acquire(self) -> None:
        """Take the build lock, or raise ``DemoError`` naming the build that holds it."""
        d = build_dir(self.root)
        d.mkdir(parents=True, exist_ok=True)
        f = open(d / LOCK_FILE, "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            other = read_state(self.root)
            raise DemoError(f"a demo build of {self.root} is already running (pid {other.pid}); watch it on the "
                            "app's home page, or wait for it to finish") from None
        self._lock = f
        self.write(force=True)

    def release(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def start(self, i: int) -> None:
        self.steps[i] = replace(self.steps[i], state="running", started=time.time(), fraction=0.0)
        self.write(force=True)

    def update(self, i: int, done: int, total: int) -> None:
        self.steps[i] = replace(self.steps[i], fraction=min(max(done / max(total, 1), 0.0), 1.0))
        self.write()

    def finish(self, i: int) -> None:
        s = self.steps[i]
        self.steps[i] = replace(s, state="done", fraction=1.0, seconds=time.time() - (s.started or time.time()))
        self.write(force=True)

    def fail(self, i: int, error: str) -> None:
        self.steps[i] = replace(self.steps[i], state="failed")
        self._state, self._error = "failed", error
        self.write(force=True)

    def complete(self) -> None:
        self._state = "done"
        self.write(force=True)

    def write(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_write < WRITE_EVERY_S:
            return
        self._last_write = now
        atomic_write_json(build_dir(self.root) / PROGRESS_FILE, {
            "state": self._state, "profile": self.profile, "pid": os.getpid(), "error": self._error,
            "updated": now, "steps": [asdict(s) for s in self.steps]})
