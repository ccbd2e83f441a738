"""One SAE training run end to end: activations -> trained SAE -> metrics -> workspace artifact.

The same function serves ``sae-core train`` and the app. A run's artifact directory holds the SAE
in the SAELens layout (``cfg.json``, ``sae_weights.safetensors``, ``sparsity.safetensors``),
``metrics.json`` (reconstruction, sparsity, shared structure and, when the model is available,
downstream CE/KL recovered) and ``history.json`` (per-step training log).

Training and evaluation rows: ``sae_core.training.data`` (the store's last tenth is held out; stores
too large for the memory budget are streamed from disk).
"""
from __future__ import annotations

import contextlib

import logging
import shutil
from dataclasses import asdict, replace
from typing import Callable, Iterable

import torch

from sae_core.activations import ActivationStore
from sae_core.io import atomic_write_json
from sae_core.models.texts import TextSource
from sae_core.sae.base import SAE
from sae_core.sae.config import SAEConfig
from sae_core.training.data import Split, StreamSplit, memory_budget, open_split, shard_batches
from sae_core.distributed import DataParallel
from sae_core.sae.io import save_sae
from sae_core.sae.metrics import MetricAccumulator, shared_structure
from sae_core.sae.sampled import RULE_REVISION, seeded_pools
from sae_core.training.loop import StepLog, TrainerConfig, TrainResult, device_for, run_bytes, train_many
from sae_core.workspace import Artifact, Workspace, artifact_name

log = logging.getLogger(__name__)
EVAL_BATCH = 4096


@torch.no_grad()
def evaluate_sae(sae: SAE, batches: Iterable[torch.Tensor], batch_size: int = EVAL_BATCH) -> dict:
    """Reconstruction and sparsity metrics at inference over the held-out ``batches`` (of
    ``batch_size`` rows, the last may be smaller), shared structure under the training rule.
    BatchTopK-family SAEs also report ``fvu_batch_rule`` and ``l0_batch_rule``: the training rule
    applied to each held-out batch, beside the inference rule's ``fvu`` and ``l0`` (issue #11).
    Sampled-SAEs that sample their pools (``pool_rule="sample"``) draw them from a generator
    seeded here, so the same SAE always gets the same metrics, whatever torch's global RNG holds."""
    with seeded_pools(sae):
        return _evaluate(sae, batches, batch_size)


def _evaluate(sae: SAE, batches: Iterable[torch.Tensor], batch_size: int) -> dict:
    sae.eval()
    acc = MetricAccumulator(sae.cfg.d_sae)
    batch_rule = hasattr(sae, "encode_batch_rule")
    acc_batch = MetricAccumulator(sae.cfg.d_sae) if batch_rule else None
    shared, n_rows = [], 0
    for x in batches:
        x = x.to(sae.device)
        out = sae(x)
        acc.update(x, out.x_hat, out.z)
        z_batch = sae.encode_batch_rule(x) if batch_rule else out.z
        if batch_rule:
            acc_batch.update(x, sae.decode(z_batch), z_batch)
        if x.shape[0] == batch_size or n_rows == 0:
            shared.append(shared_structure(z_batch, sae.cfg.k))
        n_rows += x.shape[0]
    distinct, overlap, top_mass = (sum(v) / len(shared) for v in zip(*shared))
    density = acc.density()
    by_batch = {}
    if batch_rule:
        res = acc_batch.result()
        by_batch = {"fvu_batch_rule": res.fvu, "l0_batch_rule": res.l0}
    return {**acc.result().to_json(), **by_batch, "distinct_latents_per_batch": distinct,
            "pairwise_overlap": overlap, "top_mass_fraction": top_mass,
            "eval_tokens": n_rows, "log10_density": torch.log10(density.clamp_min(1e-10))}


_AS_BEFORE = {("autocast", None), ("grad_clip", None), ("threshold", "calibrated")}


def sae_run_name(acts: Artifact, cfg: SAEConfig, tcfg: TrainerConfig) -> str:
    """The SAE artifact's name: a hash of everything that changes the trained weights (how often
    checkpoints are written does not)."""
    # how often checkpoints are written or the log is read changes nothing; autocast unset is the
    # float32 every earlier name was made with
    # (nor do the fields added since at the value every earlier run had)
    trainer = {k: v for k, v in asdict(tcfg).items()
               if k not in ("checkpoint_every", "sync_every") and (k, v) not in _AS_BEFORE}
    if trainer.get("threshold", "calibrated") == "calibrated":
        trainer.pop("threshold_start", None)  # used only by the ema threshold
    fields = {"acts": acts.name, "sae": cfg.to_json(), "trainer": trainer}
    if cfg.arch == "sampled":
        fields["rule_revision"] = RULE_REVISION
    return artifact_name(acts.model or "acts", acts.hook, fields)


def checkpointed(tcfg: TrainerConfig) -> TrainerConfig:
    """``tcfg`` with checkpoints at least every 5% of the run (25 steps at the least), so an
    interrupted workspace run loses little; a given ``checkpoint_every`` is kept."""
    return tcfg if tcfg.checkpoint_every else replace(tcfg, checkpoint_every=max(25, tcfg.steps // 20))


def train_to_workspace(ws: Workspace, acts: Artifact, cfg: SAEConfig, tcfg: TrainerConfig, *,
                       split: Split | None = None, model=None,
                       on_step: Callable[[StepLog, int], None] | None = None,
                       dp: DataParallel | None = None) -> Artifact | None:
    """Train ``cfg`` on the activation artifact ``acts`` and register the SAE (idempotent)."""
    return train_all_to_workspace(ws, acts, [cfg], tcfg, split=split, model=model, on_steps=[on_step], dp=dp)[0]


def lockstep_groups(cfgs: list[SAEConfig], tcfg: TrainerConfig, budget: int | None = None) -> list[list[int]]:
    """Indices of ``cfgs`` cut, in order, into groups whose runs fit ``budget`` bytes together
    (``run_bytes``; default: ``memory_budget()`` on the CPU, half the free memory of a GPU)."""
    if budget is None:
        device = device_for(tcfg)
        budget = torch.cuda.mem_get_info(device)[0] // 2 if device.type == "cuda" else memory_budget()
    groups: list[list[int]] = [[]]
    used, shapes = 0, set()
    for i, cfg in enumerate(cfgs):
        shape = (cfg.d_sae, cfg.dtype)  # the first run of a shape brings the buffer its group shares
        need = run_bytes(cfg, tcfg, with_buffer=shape not in shapes)
        if groups[-1] and used + need > budget:
            groups.append([])
            used, shapes = 0, set()
            need = run_bytes(cfg, tcfg)
        groups[-1].append(i)
        used += need
        shapes.add(shape)
    return groups


def train_all_to_workspace(ws: Workspace, acts: Artifact, cfgs: list[SAEConfig], tcfg: TrainerConfig, *,
                           split: Split | None = None, model=None, model_lock=None,
                           on_steps: list[Callable[[StepLog, int], None] | None] | None = None,
                           on_progress: Callable[[int, int, str], None] | None = None,
                           dp: DataParallel | None = None) -> list[Artifact]:
    """Train the SAEs of ``cfgs`` that the workspace lacks, in lockstep groups (one pass over the
    data per group: ``train_many``; groups as large as memory allows, ``lockstep_groups``), then
    evaluate and register each; returns every configuration's artifact, in order. Runs write
    checkpoints (``checkpointed``) under ``.checkpoints/`` in the workspace. Groups are cut
    from all of ``cfgs``, finished or not, so a rerun after a crash finds the same groups and
    resumes each from its checkpoints. ``on_steps``: the trainer's callback per configuration;
    ``on_progress(done, total, text)``: every group's steps, one unit per evaluation.
    ``model_lock``: held (``with model_lock:``) only around the passes that add hooks to ``model``
    (the downstream losses), never through training, so a shared model stays usable meanwhile.

    ``dp``: data-parallel (``sae_core.distributed``): every rank calls this; each trains on
    its own shards of the store (``shard_batches``), rank 0 alone evaluates, registers and
    returns the artifacts (the other ranks get None for each) once all ranks are done."""
    names = [sae_run_name(acts, cfg, tcfg) for cfg in cfgs]
    groups = [todo for g in lockstep_groups(cfgs, tcfg)
              if (todo := [i for i in g if ws.get("sae", names[i]) is None])]
    on_steps = list(on_steps or [None] * len(cfgs))
    n_todo = sum(len(g) for g in groups)
    total, done = tcfg.steps * len(groups) + n_todo, 0
    if groups:
        store = ActivationStore.open(acts.path)
        # data-parallel: no rank holds the whole store; the held-out rows are read from disk
        split = split or (StreamSplit.from_store(store) if dp else open_split(store))
    for g, todo in enumerate(groups):
        if on_progress:
            inner = on_steps[todo[0]]
            text = ("training 1 SAE" if len(todo) == 1 else f"training {len(todo)} SAEs in lockstep") \
                + (f", group {g + 1}/{len(groups)}" if len(groups) > 1 else "")

            def on_first(log: StepLog, steps: int, inner=inner, text=text, base=done) -> None:
                if inner:
                    inner(log, steps)
                on_progress(base + log.step, total, f"{text}: step {log.step}/{steps}")
            on_steps[todo[0]] = on_first
        ckpts = [ws.checkpoint_dir(names[i]) for i in todo]
        batches = (shard_batches(store, split.n_train, tcfg.batch_size, dp.rank, dp.world) if dp
                   else split.batches(tcfg.batch_size))
        results = train_many(batches, [cfgs[i] for i in todo], checkpointed(tcfg),
                             ckpt_dirs=ckpts, on_steps=[on_steps[i] for i in todo], dp=dp)
        done += tcfg.steps
        if dp and not dp.is_main:
            continue
        for i, result, ckpt in zip(todo, results, ckpts):
            if on_progress:
                on_progress(done, total, f"evaluating {cfgs[i].label}")
            _register(ws, acts, names[i], cfgs[i], tcfg, result, split, model, model_lock)
            shutil.rmtree(ckpt, ignore_errors=True)
            done += 1
    if on_progress:
        on_progress(total, total, "done")
    if dp:
        dp.barrier()  # the other ranks return once rank 0 has registered every SAE
        if not dp.is_main:
            return [None] * len(names)
    return [ws.get("sae", name) for name in names]


def _register(ws: Workspace, acts: Artifact, name: str, cfg: SAEConfig, tcfg: TrainerConfig,
              result: TrainResult, split: Split, model, model_lock=None) -> None:
    """Evaluate a trained SAE (held-out rows; downstream losses when the model is given) and write
    its artifact."""
    metrics = evaluate_sae(result.sae, split.eval_batches(EVAL_BATCH), EVAL_BATCH)
    log10_density = metrics.pop("log10_density")
    metrics["text_source"] = acts.meta.get("source") or "unknown (imported activations)"
    if model is not None and acts.hook:
        from sae_core.sae.splice import downstream_metrics, eval_tokens

        # the SAE stays on its training device; the splice moves activations to it and back
        text = TextSource.from_json(acts.meta.get("text_source"))
        with model_lock or contextlib.nullcontext():
            metrics.update(downstream_metrics(model, result.sae, acts.hook, eval_tokens(model, text),
                                              batch_rule_tokens=EVAL_BATCH).to_json())
        metrics["eval_text_source"] = text.describe_eval()
    # per-token squared error on the trainer's scaled inputs, not metrics["mse"] (per element, raw)
    metrics["final_train_sq_err_scaled"] = result.history[-1].sq_err if result.history else None
    meta = {"arch": cfg.arch, "d_sae": cfg.d_sae, "k": cfg.k, "l": cfg.l, "scoring": cfg.scoring,
            "pool_rule": cfg.pool_rule, "l1_coeff": cfg.l1_coeff, "tokens": tcfg.total_tokens,
            "activations": acts.name,
            **{m: metrics[m] for m in ("l0", "fvu", "explained_variance") if m in metrics}}
    with ws.create("sae", name, model=acts.model, hook=acts.hook, meta=meta, overwrite=True) as d:
        save_sae(result.sae, d, log10_density=log10_density)
        atomic_write_json(d / "metrics.json", metrics)
        atomic_write_json(d / "history.json", [h._asdict() for h in result.history])
