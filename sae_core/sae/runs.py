"""One SAE training run end to end: activations -> trained SAE -> metrics -> workspace artifact.

The same function serves ``sae-core train`` and the app. A run's artifact directory holds the SAE
in the SAELens layout (``cfg.json``, ``sae_weights.safetensors``, ``sparsity.safetensors``),
``metrics.json`` (reconstruction, sparsity, shared structure and, when the model is available,
downstream CE/KL recovered) and ``history.json`` (per-step training log).

Training and evaluation rows: ``sae_core.sae.data`` (the store's last tenth is held out; stores
too large for the memory budget are streamed from disk).
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from typing import Callable, Iterable

import torch

from sae_core.activations import ActivationStore
from sae_core.io import atomic_write_json
from sae_core.sae.base import SAE
from sae_core.sae.config import SAEConfig
from sae_core.sae.data import Split, open_split
from sae_core.sae.io import save_sae
from sae_core.sae.metrics import MetricAccumulator, shared_structure
from sae_core.sae.training import StepLog, TrainerConfig, TrainResult, train_many
from sae_core.workspace import Artifact, Workspace, artifact_name

log = logging.getLogger(__name__)
EVAL_BATCH = 4096


@torch.no_grad()
def evaluate_sae(sae: SAE, batches: Iterable[torch.Tensor], batch_size: int = EVAL_BATCH) -> dict:
    """Reconstruction and sparsity metrics at inference over the held-out ``batches`` (of
    ``batch_size`` rows, the last may be smaller), shared structure under the training rule."""
    sae.eval()
    acc = MetricAccumulator(sae.cfg.d_sae)
    shared, n_rows = [], 0
    for x in batches:
        x = x.to(sae.device)
        out = sae(x)
        acc.update(x, out.x_hat, out.z)
        if x.shape[0] == batch_size or n_rows == 0:
            z_batch = sae.encode_batch_rule(x) if hasattr(sae, "encode_batch_rule") else out.z
            shared.append(shared_structure(z_batch, sae.cfg.k))
        n_rows += x.shape[0]
    distinct, overlap, top_mass = (sum(v) / len(shared) for v in zip(*shared))
    density = acc.density()
    return {**acc.result().to_json(), "distinct_latents_per_batch": distinct,
            "pairwise_overlap": overlap, "top_mass_fraction": top_mass,
            "eval_tokens": n_rows, "log10_density": torch.log10(density.clamp_min(1e-10))}


def sae_run_name(acts: Artifact, cfg: SAEConfig, tcfg: TrainerConfig) -> str:
    return artifact_name(acts.model or "acts", acts.hook, {"acts": acts.name, "sae": cfg.to_json(),
                                                          "trainer": asdict(tcfg)})


def train_to_workspace(ws: Workspace, acts: Artifact, cfg: SAEConfig, tcfg: TrainerConfig, *,
                       split: Split | None = None, model=None,
                       on_step: Callable[[StepLog, int], None] | None = None) -> Artifact:
    """Train ``cfg`` on the activation artifact ``acts`` and register the SAE (idempotent)."""
    return train_all_to_workspace(ws, acts, [cfg], tcfg, split=split, model=model, on_steps=[on_step])[0]


def train_all_to_workspace(ws: Workspace, acts: Artifact, cfgs: list[SAEConfig], tcfg: TrainerConfig, *,
                           split: Split | None = None, model=None,
                           on_steps: list[Callable[[StepLog, int], None] | None] | None = None,
                           on_progress: Callable[[int, int, str], None] | None = None) -> list[Artifact]:
    """Train the SAEs of ``cfgs`` that the workspace lacks in lockstep (one pass over the data:
    ``train_many``), then evaluate and register each; returns every configuration's artifact, in
    order. A crashed group resumes from its checkpoints. ``on_steps``: the trainer's callback per
    configuration; ``on_progress(done, total, text)``: the group's steps, then one unit per
    evaluation."""
    names = [sae_run_name(acts, cfg, tcfg) for cfg in cfgs]
    todo = [i for i, name in enumerate(names) if ws.get("sae", name) is None]
    on_steps = list(on_steps or [None] * len(cfgs))
    total = tcfg.steps + len(todo)
    if todo:
        split = split or open_split(ActivationStore.open(acts.path))
        if on_progress:
            first, inner = todo[0], on_steps[todo[0]]

            def on_first(log: StepLog, steps: int) -> None:
                if inner:
                    inner(log, steps)
                on_progress(log.step, total, f"training {len(todo)} SAE(s): step {log.step}/{steps}")
            on_steps[first] = on_first
        ckpts = [ws.root / ".checkpoints" / names[i] for i in todo]
        results = train_many(split.batches(tcfg.batch_size), [cfgs[i] for i in todo], tcfg,
                             ckpt_dirs=ckpts, on_steps=[on_steps[i] for i in todo])
        for j, (i, result, ckpt) in enumerate(zip(todo, results, ckpts)):
            if on_progress:
                on_progress(tcfg.steps + j, total, f"evaluating SAE {j + 1}/{len(todo)} ({cfgs[i].label})")
            _register(ws, acts, names[i], cfgs[i], tcfg, result, split, model)
            shutil.rmtree(ckpt, ignore_errors=True)
    if on_progress:
        on_progress(total, total, "done")
    return [ws.get("sae", name) for name in names]


def _register(ws: Workspace, acts: Artifact, name: str, cfg: SAEConfig, tcfg: TrainerConfig,
              result: TrainResult, split: Split, model) -> None:
    """Evaluate a trained SAE (held-out rows; downstream losses when the model is given) and write
    its artifact."""
    metrics = evaluate_sae(result.sae, split.eval_batches(EVAL_BATCH), EVAL_BATCH)
    log10_density = metrics.pop("log10_density")
    if model is not None and acts.hook:
        from sae_core.sae.splice import downstream_metrics, eval_tokens

        metrics.update(downstream_metrics(model, result.sae.to("cpu"), acts.hook,
                                          eval_tokens(model)).to_json())
    metrics["final_train_mse"] = result.history[-1].mse if result.history else None
    meta = {"arch": cfg.arch, "d_sae": cfg.d_sae, "k": cfg.k, "l": cfg.l, "scoring": cfg.scoring,
            "pool_rule": cfg.pool_rule, "tokens": tcfg.total_tokens, "activations": acts.name,
            **{m: metrics[m] for m in ("l0", "fvu", "explained_variance") if m in metrics}}
    with ws.create("sae", name, model=acts.model, hook=acts.hook, meta=meta, overwrite=True) as d:
        save_sae(result.sae, d, log10_density=log10_density)
        atomic_write_json(d / "metrics.json", metrics)
        atomic_write_json(d / "history.json", [h._asdict() for h in result.history])
