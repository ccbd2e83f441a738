"""``sae-core demo`` and ``sae-core workspace list|reindex``: the workspace and its demo."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from sae_core.cli.common import Bar, WorkspaceOpt, friendly

ws_app = typer.Typer(help="The workspace where artifacts live.", no_args_is_help=True)
commands = typer.Typer()


@commands.command("demo")
@friendly
def demo(workspace: Optional[Path] = WorkspaceOpt,
         background: bool = typer.Option(False, "--background", help=(
             "Start the build in a detached, lower-priority process and return at once (what `make app` "
             "does); the app's home page shows its progress. Nothing starts when it is complete or running.")),
         profile: Optional[str] = typer.Option(None, "--profile", help=(
             "Step sizes: full (the app's demo) or small (the same pages at test size, about a minute); "
             "default $SAE_STUDIO_DEMO_PROFILE or full.")),
         quiet: bool = typer.Option(False, "--quiet", help="No progress bars (a line per step).")):
    """Build (idempotently, resumably) the artifacts the app shows on first open."""
    from sae_core.demo import build_demo, start_background
    from sae_core.workspace import Workspace

    ws = Workspace(workspace)
    if background:
        state = start_background(ws, profile)
        typer.echo({"done": f"the demo of {ws.root} is complete",
                    "running": f"building the demo of {ws.root} in the background (pid {state.pid}): "
                               f"step {state.n_done + 1} of {state.n_steps}; the app's home page shows its progress",
                    }.get(state.state, f"the demo build of {ws.root} has not started yet: "
                                       f"{state.error or 'see ' + str(ws.root / 'demo-build' / 'build.log')}"))
        return
    steps = _StepLines(quiet)
    arts = build_demo(ws, steps.start, profile)
    steps.end()
    for art in arts:
        typer.echo(f"ready: {art.kind}/{art.name}")


class _StepLines:
    """A bar per demo step (none when quiet) and a line with its time when it ends."""

    def __init__(self, quiet: bool):
        self.quiet, self.i, self.t0, self.bar = quiet, None, 0.0, None

    def start(self, step):
        from sae_core.demo import DEMO_STEPS

        self.end()
        self.i, self.t0 = DEMO_STEPS.index(step), time.perf_counter()
        self.bar = None if self.quiet else Bar(f"demo {self.i + 1}/{len(DEMO_STEPS)}: {step.name}", unit="it")
        return self.bar

    def end(self):
        from sae_core.demo import DEMO_STEPS

        if self.bar is not None:
            self.bar.close()
        if self.i is not None:
            typer.echo(f"step {self.i + 1}/{len(DEMO_STEPS)} done in {time.perf_counter() - self.t0:.1f} s: "
                       f"{DEMO_STEPS[self.i].name}")
        self.i, self.bar = None, None


@ws_app.command("list")
@friendly
def workspace_list(kind: Optional[str] = typer.Option(None, help="Only this kind."),
                   workspace: Optional[Path] = WorkspaceOpt):
    """The artifacts registered in the workspace."""
    from sae_core.workspace import Workspace

    ws = Workspace(workspace)
    arts = ws.list(kind)
    if not arts:
        typer.echo(f"no artifacts in {ws.root}; run `sae-core demo`")
    for a in arts:
        typer.echo(f"{a.kind:12} {a.name:60} {a.model or '':16} {a.hook or ''}")


@ws_app.command("reindex")
@friendly
def workspace_reindex(workspace: Optional[Path] = WorkspaceOpt):
    """Rebuild the registry from the artifact directories on disk."""
    from sae_core.workspace import Workspace

    typer.echo(f"registered {Workspace(workspace).reindex()} artifacts")


