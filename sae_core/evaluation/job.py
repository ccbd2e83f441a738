"""Evaluate SAEs downstream (probing, absorption, lottery) and store the results with them.

One ``evaluation`` artifact per (SAE, metric, the metric's config): ``result.json`` holds the
metric's full result and the artifact's meta its scalars (``summary``), so a later run with the same
settings reuses it. A sweep's evaluation writes those scalars into the sweep's ``table.json`` and
``table.csv`` as extra columns, where the Sampled-SAE page, the CSV and ``sae-core sweep`` read them.

The model's side of probing and absorption (hook activations of the labelled text) is built once
per (model, hook) and shared by every SAE of the call, so a sweep pays it once.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import pandas as pd

from sae_core.activations import ActivationStore
from sae_core.errors import SAECoreError
from sae_core.evaluation.absorption import absorption, absorption_data
from sae_core.evaluation.config import EvaluationConfig
from sae_core.evaluation.lottery import activation_lottery
from sae_core.evaluation.probing import sparse_probing, task_activations
from sae_core.evaluation.probing_tasks import ZOO_TASKS, read_labels_file
from sae_core.io import atomic_write_bytes, atomic_write_json, read_json
from sae_core.sae.io import load_sae
from sae_core.training.data import open_split
from sae_core.training.job import EVAL_BATCH
from sae_core.workspace import Artifact, Workspace, artifact_name

USER_FILE = "user-file"  # the model name of SAEs trained on a user's activation file (cli/training.py)
REVISION = 1  # bumped when a metric's computation changes, so stored results are recomputed


class ModelSide:
    """The model's half of probing and absorption per hook, built on first use."""

    def __init__(self, model, cfg: EvaluationConfig):
        self.model, self.cfg, self._probing, self._absorption = model, cfg, {}, {}

    def probing(self, hook: str):
        if hook not in self._probing:
            tasks = [ZOO_TASKS[t] for t in self.cfg.probing.tasks]
            if self.cfg.labels_file:
                tasks.append(read_labels_file(self.cfg.labels_file, self.cfg.probing.seed))
            self._probing[hook] = [task_activations(self.model, hook, t, self.cfg.probing) for t in tasks]
        return self._probing[hook]

    def absorption(self, hook: str):
        if hook not in self._absorption:
            self._absorption[hook] = absorption_data(self.model, hook, self.cfg.absorption)
        return self._absorption[hook]


def probing_summary(result: dict) -> dict:
    return {f"probe_{name}": value for name, value in result["mean"].items()}


def absorption_summary(result: dict) -> dict:
    return {"absorption_rate": result.get("mean_absorption"),
            "full_absorption_rate": result.get("mean_full_absorption")}


SUMMARIES: dict[str, Callable[[dict], dict]] = {
    "probing": probing_summary, "absorption": absorption_summary,
    "lottery": lambda r: {"lottery_top_share": r["top_share"], "lottery_top_share_batchtopk": r["top_share_batchtopk"],
                          "lottery_winners_overlap": r["winners_overlap"]},
}


def evaluation_name(sae_art: Artifact, metric: str, cfg: EvaluationConfig) -> str:
    return artifact_name(sae_art.model or "sae", sae_art.hook, {"sae": sae_art.name, "metric": metric,
                                                                "revision": REVISION, **cfg.metric_config(metric)})


def compute_metric(metric: str, sae, sae_art: Artifact, ws: Workspace, side: ModelSide) -> dict:
    """One metric's full result for one SAE (``side``: the model's half, shared across SAEs)."""
    if metric == "probing":
        return sparse_probing(sae, side.probing(sae_art.hook), side.cfg.probing).to_dict()
    if metric == "absorption":
        return absorption(sae, side.absorption(sae_art.hook), side.cfg.absorption).to_dict()
    acts = ws.get("activations", sae_art.meta.get("activations", ""))
    if acts is None:
        raise SAECoreError(f"SAE {sae_art.name}: its activations ({sae_art.meta.get('activations')!r}) are not in "
                           "the workspace, and the lottery is measured on their held-out rows; harvest them again")
    split = open_split(ActivationStore.open(acts.path))
    return activation_lottery(sae, split.eval_batches(EVAL_BATCH)).to_dict()


def evaluate_saes(ws: Workspace, saes: list[Artifact], cfg: EvaluationConfig, *, model=None, model_lock=None,
                  on_progress: Callable[[int, int, str], None] | None = None) -> list[dict]:
    """Each SAE's scalars of every metric of ``cfg`` (reusing stored results), one dict per SAE.
    ``model``: the loaded model of the SAEs (loaded by name when None and needed); ``model_lock``
    is held for the passes that hook it."""
    todo = [(a, m) for a in saes for m in cfg.metrics if ws.get("evaluation", evaluation_name(a, m, cfg)) is None]
    needs_model = {a.model for a, m in todo if m != "lottery"}
    if len(needs_model) > 1:
        raise SAECoreError(f"these SAEs belong to different models ({sorted(map(str, needs_model))}); evaluate "
                           "one model's SAEs at a time")
    if needs_model and model is None:
        from sae_core.models.loading import load_model

        name = next(iter(needs_model))
        if not name or name == USER_FILE:
            raise SAECoreError("probing and absorption run the SAE's model over labelled text, but this SAE was "
                               "trained on an activation file with no model recorded; evaluate its lottery alone "
                               "(--lottery), or train it from a model's harvest")
        model = load_model(name)
    side = ModelSide(model, cfg)
    for i, (sae_art, metric) in enumerate(todo):
        if on_progress:
            on_progress(i, len(todo), f"{metric}: {sae_art.meta.get('arch', '')} {sae_art.name}")
        sae = load_sae(sae_art.path)
        with model_lock if (model_lock and metric != "lottery") else contextlib.nullcontext():
            result = compute_metric(metric, sae, sae_art, ws, side)
        summary = SUMMARIES[metric](result)
        with ws.create("evaluation", evaluation_name(sae_art, metric, cfg), model=sae_art.model, hook=sae_art.hook,
                       meta={"sae": sae_art.name, "metric": metric, **summary}, overwrite=True) as d:
            atomic_write_json(d / "result.json", result)
    if on_progress and todo:
        on_progress(len(todo), len(todo), "evaluated")
    out = []
    for sae_art in saes:
        row = {}
        for metric in cfg.metrics:
            row.update({k: v for k, v in ws.get("evaluation", evaluation_name(sae_art, metric, cfg)).meta.items()
                        if k not in ("sae", "metric")})
        out.append(row)
    return out


def load_evaluation(ws: Workspace, sae_art: Artifact, metric: str, cfg: EvaluationConfig = EvaluationConfig()) -> dict | None:
    """The stored full result of ``metric`` for an SAE, or None when it was not evaluated so."""
    art = ws.get("evaluation", evaluation_name(sae_art, metric, cfg))
    return read_json(art.path / "result.json") if art is not None else None


def evaluate_sweep(ws: Workspace, sweep: Artifact, cfg: EvaluationConfig, *, model=None, model_lock=None,
                   on_progress: Callable[[int, int, str], None] | None = None) -> pd.DataFrame:
    """Evaluate every SAE of a sweep and write the scalars into its table (JSON and CSV)."""
    rows = read_json(sweep.path / "table.json")
    arts = [ws.get("sae", r["sae"]) for r in rows]
    if missing := [r["sae"] for r, a in zip(rows, arts) if a is None]:
        raise SAECoreError(f"the sweep's SAEs {missing} are not in the workspace; run the sweep again")
    scores = evaluate_saes(ws, arts, cfg, model=model, model_lock=model_lock, on_progress=on_progress)
    rows = [r | s for r, s in zip(rows, scores)]
    atomic_write_json(sweep.path / "table.json", rows)
    atomic_write_bytes(sweep.path / "table.csv", pd.DataFrame(rows).to_csv(index=False).encode())
    return pd.DataFrame(rows)
