"""``sae-core demo`` and ``sae-core workspace list|reindex``: the workspace and its demo."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sae_core.cli.common import Bar, WorkspaceOpt, friendly

ws_app = typer.Typer(help="The workspace where artifacts live.", no_args_is_help=True)
commands = typer.Typer()


@commands.command("demo")
@friendly
def demo(workspace: Optional[Path] = WorkspaceOpt):
    """Build (idempotently, resumably) the artifacts the app shows on first open."""
    from sae_core.demo import DEMO_STEPS, build_demo
    from sae_core.workspace import Workspace

    bars: list[Bar] = []

    def on_step(step):
        bars.append(Bar(f"demo {len(bars) + 1}/{len(DEMO_STEPS)}: {step.name}", unit="it"))
        return bars[-1]
    arts = build_demo(Workspace(workspace), on_step)
    for bar in bars:
        bar.close()
    for art in arts:
        typer.echo(f"ready: {art.kind}/{art.name}")


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


