"""``sae-core harvest``, ``train`` and ``sweep``: activations and SAEs, from the shell (alone or
under ``torchrun``)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import typer

from sae_core.activations import ActivationStore
from sae_core.activations.job import harvest_hooks_to_workspace
from sae_core.activations.limits import MIN_TOKENS
from sae_core.evaluation.config import EvaluationConfig
from sae_core.cli.common import (AutocastOpt, Bar, ColumnOpt, CorpusOpt, ShardOpt, SplitOpt, StepBar,
                                 WorkspaceOpt, config_default, config_option, floats, friendly, text_source,
                                 words)
from sae_core.models.random_arch import describe
from sae_core.sae.config import ARCHITECTURES, SAEConfig, require_partial_pool
from sae_core.training.config import TrainerConfig
from sae_core.training.data import open_split
from sae_core.training.ranks import check_file_ranks, follower_on_step, guard_ranks, rank_shard_tokens
from sae_core.training.sweep import SweepConfig

commands = typer.Typer()


@commands.command("harvest")
@friendly
def harvest(model: str = typer.Argument(..., help="zoo:NAME, random:ARCH, a local directory or a hub name."),
            hook: str = typer.Option(..., help="Hook point, e.g. blocks.1.hook_resid_post."),
            tokens: int = typer.Option(100_000, help="How many tokens to harvest."),
            context_size: int = config_option(harvest_hooks_to_workspace, "context_size",
                                              help="Tokens per sequence."),
            seed: int = config_option(harvest_hooks_to_workspace, "seed", help="Corpus seed."),
            keep_special: bool = typer.Option(False, help="Keep BOS/special-token positions."),
            corpus: Optional[Path] = CorpusOpt, text_column: str = ColumnOpt, split: str = SplitOpt,
            shard_tokens: int = ShardOpt, autocast: Optional[str] = AutocastOpt,
            device: Optional[str] = typer.Option(None, help="Run the model on cpu, cuda or cuda:N "
                                                 "[default: cuda when available]."),
            workspace: Optional[Path] = WorkspaceOpt):
    """Harvest activations at a hook over the zoo corpus (or --corpus) into the workspace (resumable).

    Under ``torchrun --nproc-per-node N -m sae_core.cli harvest ...`` the N ranks each harvest a
    share of the texts into one store (rank r on cuda:r when on GPUs); rank 0 merges and reports."""
    from sae_core.activations import harvest_to_workspace
    from sae_core.models.loading import load_model
    from sae_core import distributed
    from sae_core.workspace import Workspace

    with distributed.joined(device) as dp:
        text = text_source(corpus, text_column, split)
        # data-parallel: each rank its own copy on its own device; else loaded only if needed
        lm = load_model(model, device=str(dp.device) if dp else device) if dp or device else None
        main = dp is None or dp.is_main
        bar = Bar(f"harvest {hook}" + (f" (rank 0 of {dp.world})" if dp else ""), unit="doc") if main else None
        art = harvest_to_workspace(Workspace(workspace), model, hook, n_tokens=tokens, seed=seed,
                                   context_size=context_size, exclude_special=not keep_special,
                                   text=text, on_progress=bar, shard_tokens=shard_tokens, model=lm, dp=dp,
                                   autocast=autocast)
        if not main:
            return
        bar.close()
        typer.echo(f"{art.kind}/{art.name}: {art.meta.get('n_tokens', 0):,} tokens of {art.meta.get('source')}"
                   f" from {describe(model)} -> {art.path}")


def _activations(ws, model: Optional[str], hook: Optional[str], tokens: int, acts: Optional[Path],
                 text=None, shard_tokens: int = ShardOpt.default, with_model: bool = True, ranks: int = 1):
    """``(activation artifact, language model or None)``: a user's file (no model), or a
    (cached) harvest of ``model``, which is loaded once and returned for the downstream metrics
    (``with_model=False``: a rank other than 0: the model only when the harvest needs it, not
    returned, and nothing printed). Under ``ranks`` data-parallel ranks a user's file is cut into
    shards small enough that every rank reads some (``rank_shard_tokens``)."""
    from sae_core.activations import harvest_to_workspace, import_to_workspace
    from sae_core.activations.user_file import open_activation_file
    from sae_core.models.loading import load_model

    if acts is not None:  # a user's file is not labelled as the default model's activations
        if ranks > 1:
            shard_tokens = rank_shard_tokens(open_activation_file(acts).n, ranks, shard_tokens)
        return import_to_workspace(ws, acts, hook=hook or "user", model=model or "user-file",
                                   shard_tokens=shard_tokens), None
    implicit = [opt for opt, given in (("--model", model), ("--hook", hook)) if given is None]
    model, hook = model or DEFAULT_MODEL, hook or DEFAULT_HOOK
    if implicit and with_model:
        typer.echo(f"using {model} at {hook} (the default{'s' if len(implicit) == 2 else ''}; pass "
                   f"{'/'.join(implicit)} to choose)")
    lm = load_model(model) if with_model else None
    bar = Bar(f"harvest {hook}", unit="doc")
    art = harvest_to_workspace(ws, model, hook, n_tokens=tokens, text=text, on_progress=bar, model=lm,
                               shard_tokens=shard_tokens)
    bar.close()
    return art, lm


DEFAULT_MODEL, DEFAULT_HOOK = "zoo:tiny-a", "blocks.1.hook_resid_post"
HARVEST_CAP = 200_000  # the most a train or sweep harvests unasked (its fixed amount before issue #28)


def harvest_needed(tokens: int, batch_size: int) -> int:
    """What a run of ``tokens`` harvests when ``--harvest-tokens`` is not given: the rows its steps
    read (steps x batch size) and the held-out share on top (``open_split`` keeps the store's last
    ``eval_fraction`` for evaluation), at least the smallest harvest and at most ``HARVEST_CAP``; a
    longer run repeats the rows."""
    train = tokens // batch_size * batch_size
    need = math.ceil(train / (1 - config_default(open_split, "eval_fraction")))
    return min(HARVEST_CAP, max(MIN_TOKENS, need))


ModelOpt = typer.Option(None, help=f"Model (zoo:NAME, directory or hub name) the activations come "
                                   f"from [default: {DEFAULT_MODEL}; with --acts, a label].")
HookOpt = typer.Option(None, help=f"Hook point the SAE reads [default: {DEFAULT_HOOK}; with --acts, a label].")
ActsOpt = typer.Option(None, "--acts", help="Train on this .npy/.safetensors [tokens, d] file instead.")
# jumprelu is inference-only (SAELens imports); the others train
TRAINABLE = tuple(a for a in ARCHITECTURES if a != "jumprelu")


@dataclass(frozen=True)
class TrainCommand:
    """The ``train`` and ``sweep`` commands' own defaults, where the library has none (an SAE's
    architecture and width, a run's length) or sizes a run differently: runs from the shell are small
    and interactive, so their batch is smaller than ``TrainerConfig.batch_size``, which suits long runs.
    Every other option of these commands takes its default from its config field (``config_option``)."""
    arch: str = field(default="batchtopk", metadata={"help": " | ".join(TRAINABLE)})
    d_sae: int = field(default=1024, metadata={"help": "Number of latents."})
    tokens: int = field(default=500_000, metadata={"help": "Training tokens."})
    harvest_tokens: Optional[int] = field(default=None, metadata={"help": (
        f"Tokens to harvest (when not --acts) [default: what the run reads plus a tenth held out for "
        f"evaluation, at most {HARVEST_CAP:,}].")})
    batch_size: int = field(default=1024, metadata={"help": "Tokens per training batch."})


@dataclass(frozen=True)
class SweepCommand:
    """The ``sweep`` command's own defaults where ``SweepConfig`` has none (the values of l) or
    another (fewer training tokens per SAE than ``SweepConfig.tokens``: runs from the shell are small)."""
    ls: tuple[float, ...] = field(default=(1.0, 2.0, 4.0, 8.0, 16.0),
                                  metadata={"help": "Comma-separated values of l."})
    tokens: int = field(default=300_000, metadata={"help": "Training tokens per SAE."})


@commands.command("train")
@friendly
def train(arch: str = config_option(TrainCommand, "arch"),
          k: int = config_option(SAEConfig, "k"),
          l: float = config_option(SAEConfig, "l"),
          scoring: str = config_option(SAEConfig, "scoring"),
          pool_rule: str = config_option(SAEConfig, "pool_rule"),
          d_sae: int = config_option(TrainCommand, "d_sae", "--d-sae"),
          tokens: int = config_option(TrainCommand, "tokens"),
          harvest_tokens: Optional[int] = config_option(TrainCommand, "harvest_tokens"),
          batch_size: int = config_option(TrainCommand, "batch_size"),
          lr: Optional[float] = config_option(TrainerConfig, "lr"),
          seed: int = config_option(TrainerConfig, "seed"), model: Optional[str] = ModelOpt,
          hook: Optional[str] = HookOpt, acts: Optional[Path] = ActsOpt,
          out: Optional[Path] = typer.Option(None, help="Also copy the SAE and metrics.json here."),
          corpus: Optional[Path] = CorpusOpt, text_column: str = ColumnOpt, split: str = SplitOpt,
          shard_tokens: int = ShardOpt, autocast: Optional[str] = config_option(TrainerConfig, "autocast"),
          device: Optional[str] = config_option(TrainerConfig, "device"),
          workspace: Optional[Path] = WorkspaceOpt):
    """Train one SAE; writes it (SAELens layout) and metrics.json into the workspace.

    Under ``torchrun --nproc-per-node N -m sae_core.cli train ...`` the N ranks train it together,
    data-parallel (README, "Scaling up"); rank 0 harvests, evaluates, registers and prints."""
    from sae_core import distributed

    with distributed.joined(device) as dp:  # torchrun: join the group (a bad --device fails here)
        _train(dp, arch, k, l, scoring, pool_rule, d_sae, tokens, harvest_tokens, batch_size, lr, seed, model,
               hook, acts, out, corpus, text_column, split, shard_tokens, device, workspace, autocast)


def _train(dp, arch, k, l, scoring, pool_rule, d_sae, tokens, harvest_tokens, batch_size, lr, seed, model, hook,
           acts, out, corpus, text_column, split, shard_tokens, device, workspace, autocast=None):
    import shutil
    from dataclasses import replace

    from sae_core.training.job import train_to_workspace
    from sae_core.workspace import Workspace

    ws = Workspace(workspace)
    main = dp is None or dp.is_main
    tcfg = TrainerConfig(total_tokens=tokens, batch_size=batch_size, lr=lr, seed=seed,
                         device=str(dp.device.type) if dp else device, autocast=autocast)
    # checked now, before any harvest (e.g. --l 0.5); the width comes with the activations
    cfg = SAEConfig(arch=arch, d_in=1, d_sae=d_sae, k=k, l=l, scoring=scoring, pool_rule=pool_rule)
    if arch == "sampled":  # a pool of every latent would train plain BatchTopK (issue #28)
        require_partial_pool(k, l, d_sae)
    text = text_source(corpus, text_column, split)
    if not main:
        dp.barrier()  # rank 0 harvests (or imports) first; then every rank opens the same artifact
    harvest_tokens = harvest_tokens or harvest_needed(tcfg.total_tokens, tcfg.batch_size)
    art, lm = _activations(ws, model, hook, harvest_tokens, acts, text, shard_tokens, with_model=main,
                           ranks=dp.world if dp else 1)
    if main and dp:
        dp.barrier()
    if dp and acts is not None:  # harvests are cut for the ranks by harvest --shard-tokens; a file, here
        check_file_ranks(ActivationStore.open(art.path), dp.world, acts)
    d_in = art.meta.get("d") or art.meta.get("d_in")
    cfg = replace(cfg, d_in=int(d_in), model_name=art.model or "", hook_name=art.hook or "")
    sae_art = guard_ranks(dp, ws, lambda: train_to_workspace(
        ws, art, cfg, tcfg, model=lm, on_step=StepBar(f"train {arch}") if main else follower_on_step(dp), dp=dp))
    if not main:
        return
    if out:
        shutil.copytree(sae_art.path, out, dirs_exist_ok=True)
    m = sae_art.meta
    typer.echo(f"sae/{sae_art.name}: L0 {m.get('l0', float('nan')):.1f}, FVU {m.get('fvu', float('nan')):.3f}"
               f" on {art.meta.get('source') or 'your activations'} -> {out or sae_art.path}")


@commands.command("sweep")
@friendly
def sweep(ls: str = config_option(SweepCommand, "ls", "--l"),
          scorings: str = config_option(SweepConfig, "scorings", "--scoring"),
          k: int = config_option(SAEConfig, "k"), d_sae: int = config_option(TrainCommand, "d_sae", "--d-sae"),
          tokens: int = config_option(SweepCommand, "tokens"),
          harvest_tokens: Optional[int] = config_option(TrainCommand, "harvest_tokens"),
          batch_size: int = config_option(SweepConfig, "batch_size"),
          seed: int = config_option(SweepConfig, "seed"),
          references: str = config_option(SweepConfig, "references"),
          pool_rule: str = config_option(SweepConfig, "pool_rule"),
          model: Optional[str] = ModelOpt, hook: Optional[str] = HookOpt, acts: Optional[Path] = ActsOpt,
          corpus: Optional[Path] = CorpusOpt, text_column: str = ColumnOpt, split: str = SplitOpt,
          device: Optional[str] = config_option(SweepConfig, "device"),
          evaluate: str = typer.Option("", "--evaluate", help="Also evaluate every SAE: comma-separated "
                                       "probing, absorption, lottery (see `sae-core evaluate`)."),
          workspace: Optional[Path] = WorkspaceOpt):
    """Train one Sampled-SAE per l and scoring rule (plus references) in lockstep, one pass over the
    activations; write the metrics table. Interrupted sweeps resume from checkpoints. --evaluate adds
    downstream metrics to the table."""
    from sae_core.training.sweep import run_sweep
    from sae_core.workspace import Workspace

    ws = Workspace(workspace)
    ecfg = EvaluationConfig(metrics=words(evaluate)) if evaluate else None  # refused before any work
    sc = SweepConfig(k=k, d_sae=d_sae, ls=floats(ls, "--l"),
                     scorings=words(scorings),
                     references=words(references),
                     pool_rule=pool_rule, tokens=tokens, batch_size=batch_size, seed=seed, device=device)
    art, lm = _activations(ws, model, hook, harvest_tokens or harvest_needed(sc.tokens, sc.batch_size), acts,
                           text_source(corpus, text_column, split))

    bar = Bar(f"sweep ({len(sc.ls) * len(sc.scorings) + len(sc.references)} SAEs in lockstep)", unit="step")
    result = run_sweep(ws, art, sc, model=lm, on_progress=bar)
    bar.close()
    if ecfg is not None:
        from sae_core.evaluation.job import evaluate_sweep

        bar = Bar(f"evaluate ({', '.join(ecfg.metrics)})", unit="step")
        evaluate_sweep(ws, result, ecfg, model=lm, on_progress=bar)
        bar.close()
    typer.echo(f"sweep/{result.name}: {result.meta['n_saes']} SAEs -> {result.path / 'table.csv'}")


