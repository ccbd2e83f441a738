"""``sae-core steer generate``: one prompt, generated with and without interventions: saved vectors,
switches, and SAE features (added along their decoder row, or clamped through the SAE)."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import typer

from sae_core.cli.common import WorkspaceOpt, friendly, sae_dir
from sae_core.cli.steering import OpOpt, TokenOpt, VectorsOpt, _interventions, steer_app

FeatureOpt = typer.Option(None, "--feature", help="An SAE feature to steer with (needs --sae, and --clamp or "
                          "--alpha); repeatable: several features at once.")
ClampOpt = typer.Option(None, "--clamp", help="Set each --feature's activation to this value through the SAE, "
                        "its error term kept: one value for every feature, or one per --feature.")
AlphaOpt = typer.Option(None, "--alpha", help="h + alpha v for every --vector (default -1); with --feature, "
                        "add alpha times the feature's decoder row (one value for every feature, or one each).")
SaeOpt = typer.Option(None, "--sae", help="The SAE --feature numbers belong to: a directory (ours or SAELens) or a "
                      "workspace SAE name; the features act at the hook it was trained on.")
PositionsOpt = typer.Option(None, "--positions", help="Where vectors and features act: trigger, all, prompt, "
                            "generated, last (default: trigger for vectors, all for features; never the BOS "
                            "for features).")


def _per_feature(values: list[float], features: list[int], option: str) -> list[float]:
    if len(values) == 1:
        return values * len(features)
    if len(values) != len(features):
        raise typer.BadParameter(f"give one {option} for every --feature or one each: got {len(values)} values "
                                 f"for {len(features)} features")
    return values


def feature_edits(features: list[int], clamp: Optional[list[float]], alpha: Optional[list[float]]):
    """The command line's --feature / --clamp / --alpha as ``FeatureEdit``s (exactly one of the two)."""
    from sae_core.steering.feature_edits import FeatureEdit

    if bool(clamp) == bool(alpha):
        raise typer.BadParameter("with --feature give either --clamp V (set its activation) or --alpha A (add "
                                 "A times its decoder row), not both and not neither")
    mode, values = ("clamp", clamp) if clamp else ("add", alpha)
    return [FeatureEdit(f, mode, v) for f, v in zip(features, _per_feature(values, features, f"--{mode}"))]


@steer_app.command("generate")
@friendly
def steer_generate(model: str = typer.Option(..., help="The model to generate with."),
                   prompt: str = typer.Option(..., help="The prompt."),
                   vector: Optional[list[str]] = VectorsOpt,
                   alpha: Optional[list[float]] = AlphaOpt,
                   op: str = OpOpt, positions: Optional[str] = PositionsOpt, token: Optional[str] = TokenOpt,
                   switch: Optional[list[str]] = typer.Option(None, "--switch", help="A switch (mapper) to turn "
                                                              "on: artifact, directory or a study's 'switch'."),
                   sae: Optional[str] = SaeOpt, feature: Optional[list[int]] = FeatureOpt,
                   clamp: Optional[list[float]] = ClampOpt,
                   gate: Optional[str] = typer.Option(None, "--gate", help="A gated switch to turn on (`sae-core "
                                                      "steer gate` made it; 'latest': the newest)."),
                   gate_threshold: Optional[float] = typer.Option(None, "--gate-threshold", help="Open the --gate "
                                                                  "above this activation instead of its own threshold."),
                   tokens: int = typer.Option(20, min=1, help="New tokens."),
                   workspace: Optional[Path] = WorkspaceOpt):
    """Generate greedily (KV cache) with and without the interventions; brackets mark where they fired,
    and with --feature the first feature's activation is printed under every token."""
    from sae_core.cli.models import warn_about_prompt
    from sae_core.models.generation import generate, read_prompt
    from sae_core.models.loading import load_model
    from sae_core.sae.io import load_sae
    from sae_core.steering.feature_edits import check_sae_fits, feature_interventions, watch_features
    from sae_core.steering.interventions import intervene
    from sae_core.steering.job import find_gated_switch
    from sae_core.steering.tasks import positions_rule
    from sae_core.workspace import Workspace

    if clamp and not feature:
        raise typer.BadParameter("--clamp sets a feature's activation: name the feature with --feature")
    if feature and not sae:
        raise typer.BadParameter("--feature names a feature of an SAE: give the SAE with --sae")
    if vector and alpha and len(alpha) > 1:
        raise typer.BadParameter("--vector takes one --alpha for every vector; give one value")
    ws, lm = Workspace(workspace), load_model(model)
    read = read_prompt(lm, prompt)
    specs = _interventions(ws, lm, model, vector, alpha[0] if alpha else None, op, positions or "trigger", token,
                           switch, [prompt])
    loaded = None
    if feature:
        edits = feature_edits(feature, clamp, alpha)
        loaded = load_sae(sae_dir(ws, sae))
        hook = loaded.cfg.hook_name
        if not hook:
            raise typer.BadParameter(f"the SAE at {sae!r} names no hook in its cfg.json (hook_name); it cannot "
                                     "say where its features act")
        check_sae_fits(lm, loaded, hook)
        specs += feature_interventions(loaded, hook, edits, positions_rule(positions or "all", lm.tokenizer, token,
                                                                           [prompt]))
    if gate_threshold is not None and not gate:
        raise typer.BadParameter("--gate-threshold sets a gate's threshold: name the gated switch with --gate")
    if gate:
        gated, study = find_gated_switch(ws, gate, gate_threshold)
        if study.config["target_model"] != model:
            raise typer.BadParameter(f"the gated switch {gate!r} acts on {study.config['target_model']}, not {model}")
        specs.append(gated)
    warn_about_prompt(lm, model, read)
    ids, tok = read.ids_1T, lm.tokenizer
    plain = generate(lm, ids, tokens)
    with (watch_features(lm, loaded, loaded.cfg.hook_name, [feature[0]]) if loaded else nullcontext()) as trace, \
            intervene(lm, specs, record=True) as rec:
        out = generate(lm, ids, tokens)
    fired = {pos for spec in specs for _, pos, norm in rec.fired.get(spec.label, []) if norm > 0}
    pieces = [tok.decode([t]).strip() for t in out[0].tolist()]
    # one token a word, spaced as read (joined without spaces "User:DEPLOYMENTHowdoI..." did not read)
    shown = " ".join(f"[{w}]" if p in fired else w for p, w in enumerate(pieces) if p > 0)
    typer.echo(f"plain:   {tok.decode(plain[0, ids.shape[1]:], skip_special_tokens=True)}")
    typer.echo(f"steered: {tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)}")
    typer.echo(f"fired:   {shown}")
    if trace is not None:
        acts = trace.values(feature[0], 1, out.shape[1])[0].tolist()
        typer.echo(f"feature {feature[0]} (before the edits): " + " ".join(
            f"{w}({a:.2g})" if a > 0 else w for w, a in zip(pieces[1:], acts[1:])))
    for label in rec.unmatched:
        typer.secho(f"warning: {label} matched no position of the prompt", fg=typer.colors.YELLOW, err=True)
    for spec in (s for s in specs if s.label in rec.silent):
        typer.secho(f"warning: the {spec.label} never acted: its gate ({spec.gate.label}) did not open on this prompt "
                    "or its continuation", fg=typer.colors.YELLOW, err=True)
