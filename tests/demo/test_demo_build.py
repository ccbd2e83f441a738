"""The demo build's progress file: steps recorded, time left, a crash, a dead builder, the lock."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import sae_core.demo.build as build
from sae_core.demo.progress import BuildState, DemoError, Recorder, StepState, read_state
from sae_core.demo.steps import DEMO_STEPS, PROFILES, DemoStep, profile_named
from sae_core.workspace import Workspace


def _strict(path):
    def refuse(c):
        raise ValueError(f"non-strict JSON constant {c}")
    return json.loads(path.read_text(), parse_constant=refuse)


def _fake_steps(monkeypatch, runs):
    steps = [DemoStep(f"fake {i}", run, (f"kind{i}",)) for i, run in enumerate(runs)]
    monkeypatch.setattr(build, "DEMO_STEPS", steps)
    monkeypatch.setitem(PROFILES, "fake", PROFILES["small"].__class__("fake", 1, {}, 1, expected_s=(1.0,) * len(steps)))
    return steps


def test_build_records_every_step_in_a_strict_json_file(tmp_path, monkeypatch):
    seen = []

    def step(ws, p, on_progress):
        for d in (1, 2, 4):
            on_progress(d, 4)
        seen.append(read_state(ws.root))  # as another process would read it, mid-build
        return f"artifact {len(seen)}"
    _fake_steps(monkeypatch, [step, step, step])
    assert build.build_demo(Workspace(tmp_path), profile="fake") == ["artifact 1", "artifact 2", "artifact 3"]
    mid = seen[1]
    assert mid.state == "running" and mid.current == 1 and mid.n_done == 1 and mid.pid == os.getpid()
    assert [s.state for s in mid.steps] == ["done", "running", "pending"]
    assert mid.step_making("kind1") == 1 and mid.step_making("kind0") is None
    end = read_state(tmp_path)
    assert end.state == "done" and end.n_done == 3 and end.profile == "fake" and end.fraction == 1.0
    assert _strict(tmp_path / "demo-build" / "progress.json")["state"] == "done"


def test_a_crash_is_recorded_with_its_message_and_raised(tmp_path, monkeypatch):
    def ok(ws, p, on_progress):
        return "a"

    def boom(ws, p, on_progress):
        raise RuntimeError("disk full")
    _fake_steps(monkeypatch, [ok, boom, ok])
    with pytest.raises(RuntimeError, match="disk full"):
        build.build_demo(Workspace(tmp_path), profile="fake")
    state = read_state(tmp_path)
    assert state.state == "failed" and state.current == 1 and state.error == "RuntimeError: disk full"
    assert [s.state for s in state.steps] == ["done", "failed", "pending"]
    assert state.step_making("kind1") == 1 and state.step_making("kind2") == 2


def test_time_left_scales_by_this_machines_pace_and_skips_prebuilt_steps():
    now = 1000.0
    steps = (StepState("prebuilt", ("a",), 100.0, "done", 1.0, 0.0, 1.0),    # had its artifact: not timed
             StepState("slow", ("b",), 10.0, "done", 1.0, 0.0, 20.0),        # took twice its expected time
             StepState("running", ("c",), 30.0, "running", 0.25, now - 15.0),  # its own pace: 45 s more
             StepState("pending", ("d",), 50.0))                             # 50 s x 2
    state = BuildState("running", steps)
    assert state.seconds_left(now) == pytest.approx(45.0 + 100.0)
    assert state.seconds_until(2, now) == pytest.approx(45.0)
    early = BuildState("running", (steps[1], StepState("r", ("c",), 30.0, "running", 0.0, now - 5.0), steps[3]))
    assert early.seconds_left(now) == pytest.approx((60.0 - 5.0) + 100.0)  # expected x pace, less elapsed
    assert BuildState("done", steps).seconds_left(now) is None


def test_a_builder_that_died_reads_as_stopped(tmp_path):
    rec = Recorder(tmp_path, [StepState("one", ("a",), 1.0)], "full")
    rec.acquire()
    rec.start(0)
    assert read_state(tmp_path).state == "running"
    rec.release()  # what the kernel does when the process dies: the file still says running
    state = read_state(tmp_path)
    assert state.state == "stopped" and "ended before it finished" in state.error


def test_a_second_build_of_one_workspace_is_refused_while_the_first_runs(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from sae_core.demo.progress import Recorder, StepState;"
        "r = Recorder(Path(sys.argv[1]), [StepState('one', ('a',), 1.0)], 'full'); r.acquire(); r.start(0);"
        "print('held', flush=True); time.sleep(60)"), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DemoError, match=f"already running \\(pid {holder.pid}\\)"):
            Recorder(tmp_path, [StepState("one", ("a",), 1.0)], "full").acquire()
        assert read_state(tmp_path).state == "running"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert read_state(tmp_path).state == "stopped"


def test_profiles():
    assert profile_named(None).name == "full"
    assert all(len(p.expected_s) == len(DEMO_STEPS) for p in PROFILES.values())
    with pytest.raises(DemoError, match="'huge' does not exist: use one of full, small"):
        profile_named("huge")


def _complete_demo(tmp_path, monkeypatch) -> None:
    """A one-step fake demo built to the end in ``tmp_path``; starting a process then fails the test."""
    def ok(ws, p, on_progress):
        return "a"
    _fake_steps(monkeypatch, [ok])
    build.build_demo(Workspace(tmp_path), profile="fake")
    monkeypatch.setattr(build.subprocess, "Popen", lambda *a, **k: pytest.fail("a build was started"))


def test_the_background_start_returns_at_once_when_the_demo_is_complete(tmp_path, monkeypatch):
    _complete_demo(tmp_path, monkeypatch)
    assert build.start_background(Workspace(tmp_path), "fake").state == "done"


def test_the_cli_says_a_complete_demo_is_complete_and_starts_nothing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from sae_core.cli.app import app

    _complete_demo(tmp_path, monkeypatch)
    out = CliRunner().invoke(app, ["demo", "--background", "--profile", "fake", "-w", str(tmp_path)])
    assert out.exit_code == 0 and f"the demo of {tmp_path} is complete" in out.output
    bad = CliRunner().invoke(app, ["demo", "--profile", "huge", "-w", str(tmp_path)])
    assert bad.exit_code == 2 and "demo profile 'huge' does not exist" in bad.output
