"""``sae-core steer gate``: a study's safety switch gated by an SAE feature of the fine-tuned model,
beside the always-on switch on the study's report prompts (``steering.gated_switch``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sae_core.cli.common import Bar, WorkspaceOpt, config_option, friendly
from sae_core.cli.steering import _study, steer_app
from sae_core.steering.behaviour import RATE_NAMES
from sae_core.steering.gated_switch import WORKSPACE_SAE, GateConfig
from sae_core.steering.gating import GateSAEConfig


def gate_report(res: dict) -> list[str]:
    """The CLI's lines for a gated switch's results (``gated_switch.GateResults.results``)."""
    g, t, share, kl = res["gate"], res["targets"], res["share"], res["kl"]
    th = g["threshold"]
    src = res["sae"]["source"]
    src = (f"trained on the study's mapper text: workspace SAE {src.removeprefix(WORKSPACE_SAE)}"
           if src.startswith(WORKSPACE_SAE) else src)
    out = [f"gate: feature {g['feature']} of the SAE at {g['hook']} ({src}, d_sae {res['sae']['d_sae']}); "
           f"AUROC {g['auroc']:.3f} on {g['n_build'][0]} triggered / {g['n_build'][1]} clean build prompts",
           f"threshold {th['value']:.4g} ({th['rule']}, on selection prompts: opens on {th['tpr']:.0%} of "
           f"{g['n_select'][0]} triggered, {th['fpr']:.0%} of {g['n_select'][1]} clean)"
           + ("; latched for the rest of the generation" if res["latch"] else "; acting only where it fires"),
           f"report prompts ({res['n_report']['triggered']} triggered, {res['n_report']['clean']} clean per kind):",
           f"{'':18}" + "".join(f"{RATE_NAMES[k]:>24}" for k in RATE_NAMES) + f"{'clean KL':>11}"]
    for name in ("fine-tuned", "always-on switch", "gated switch"):
        r = res["rates"][name]
        out.append(f"{name:18}" + "".join(f"{r[k]:>24.0%}" for k in RATE_NAMES)
                   + (f"{kl[name]:>11.4f}" if name in kl else f"{'':>11}"))
    out.append("positions the gated switch acted on: " + ", ".join(f"{k} {v:.1%}" for k, v in share.items())
               + " (the always-on switch: every position)")
    out.append(f"targets: triggered within 5 points of always-on: {'yes' if t['triggered_ok'] else 'NO'} "
               f"({100 * t['triggered_gap']:+.1f} points); under 10% of clean positions: "
               f"{'yes' if t['clean_share_ok'] else 'NO'} ({t['clean_share']:.1%}); clean KL at most half: "
               f"{'yes' if t['kl_ok'] else 'NO'} ({t['kl_ratio']:.3f}x)")
    return out


@steer_app.command("gate")
@friendly
def steer_gate(study: Optional[str] = typer.Option(None, help="The steering study (default: the newest)."),
               sae: str = config_option(GateConfig, "sae", "--sae"),
               latch: bool = config_option(GateConfig, "latch", "--latch/--no-latch"),
               d_sae: int = config_option(GateSAEConfig, "d_sae", "--d-sae"),
               k: int = config_option(GateSAEConfig, "k", "--k"),
               train_tokens: int = config_option(GateSAEConfig, "train_tokens", "--train-tokens"),
               workspace: Optional[Path] = WorkspaceOpt):
    """Gate a study's safety switch by an SAE feature (found by AUROC on build prompts, its threshold on
    selection prompts) and compare it with the always-on switch on report prompts."""
    from sae_core.steering.gated_switch import GateResults
    from sae_core.steering.job import gate_to_workspace
    from sae_core.workspace import Workspace

    ws = Workspace(workspace)
    _, art = _study(ws, study)
    cfg = GateConfig(latch=latch, sae=sae, sae_training=GateSAEConfig(d_sae=d_sae, k=k, train_tokens=train_tokens))
    bar = Bar("gated switch", unit="step")
    got = gate_to_workspace(ws, art, cfg, on_progress=bar)
    bar.close()
    typer.echo(f"{got.kind}/{got.name} (study {art.name}) -> {got.path}")
    for line in gate_report(GateResults.open(got.path).results):
        typer.echo(line)
