"""The Sampled-SAE page's cached reads and its l-sweep job."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from sae_app import listing, results, session
from sae_core.models.texts import TextSource
from sae_core.workspace import Artifact

if TYPE_CHECKING:
    from sae_core.training.sweep import SweepConfig


def list_sweeps(root: str, model: str | None, hook: str | None) -> list[Artifact]:
    """Sweeps in the workspace for ``model``/``hook`` (all sweeps when either is None), newest first."""
    return [a for a in listing.list_artifacts(root, "sweep")
            if (model is None or a.model == model) and (hook is None or a.hook == hook)]


def sweep_table(path: str, created: float) -> pd.DataFrame:
    """The sweep's table, read again when an evaluation rewrites it (the file's time is in the key)."""
    table = Path(path) / "table.json"
    return _sweep_table(path, created, table.stat().st_mtime_ns if table.exists() else 0)


@st.cache_data(show_spinner=False)
def _sweep_table(path: str, created: float, version: int) -> pd.DataFrame:
    from sae_core.training.sweep import load_sweep_table

    return load_sweep_table(Artifact("sweep", Path(path).name, Path(path), None, None, created, {}))


def evaluated(table: pd.DataFrame) -> list[str]:
    """The downstream metrics the sweep's table holds (issue #30)."""
    return [m for m, col in (("probing", "probe_sae_top_1"), ("absorption", "absorption_rate"),
                             ("lottery", "lottery_top_share")) if col in table and table[col].notna().any()]


def lottery(root: str, sae: str) -> dict | None:
    """An SAE's stored activation lottery (``sae-core evaluate --lottery``), or None."""
    from sae_core.evaluation.config import EvaluationConfig
    from sae_core.evaluation.job import evaluation_name

    ws = listing.open_workspace(root)
    art = ws.get("sae", sae)
    found = ws.get("evaluation", evaluation_name(art, "lottery", EvaluationConfig())) if art is not None else None
    return _result(str(found.path), found.created) if found is not None else None


@st.cache_data(show_spinner=False)
def _result(path: str, created: float) -> dict:
    from sae_core.io import read_json

    return read_json(Path(path) / "result.json")


def evaluation_config():
    """The settings the page's evaluation uses: the library's defaults (``sae-core evaluate``'s)."""
    from sae_core.evaluation.config import EvaluationConfig

    return EvaluationConfig()


def evaluate_sweep(root: str, on_progress=None, *, path: str, model_name: str) -> Artifact:
    """Probing, absorption and the lottery for every SAE of the sweep at ``path``, into its table
    (``sae-core sweep --evaluate``); the model's lock is held only for its passes."""
    from sae_core.evaluation.job import evaluate_sweep as _evaluate

    def job(ws):
        sweep = ws.get("sweep", Path(path).name)
        _evaluate(ws, sweep, evaluation_config(), model=session.load_model(model_name),
                  model_lock=session.model_lock(model_name),
                  on_progress=on_progress)
        return sweep
    return results.build(root, job)


@st.cache_data(show_spinner=False)
def sweep_method(path: str, created: float) -> list[dict[str, str]]:
    """The sweep's Method table (``training.method``), from its stored config."""
    from sae_core.io import read_json
    from sae_core.training.method import method_rows

    return method_rows(read_json(Path(path) / "sweep.json"))


@st.cache_data(show_spinner=False)
def training_curves(root: str, path: str, created: float) -> pd.DataFrame:
    from sae_core.training.sweep import load_training_curves

    return load_training_curves(listing.open_workspace(root), sweep_table(path, created))


def run_sweep(root: str, model_name: str, hook: str, sc: SweepConfig, *, n_tokens_harvest: int,
              text: TextSource | None = None, on_progress=None) -> Artifact:
    """Harvest (or reuse) activations under the model's lock, then run the l-sweep ``sc`` (built,
    and so checked, by the page before it starts the job); training runs without the lock (it never
    touches the model), which is taken again only for the downstream losses, so live steering in
    another tab is not frozen for the whole sweep."""
    from sae_core.activations import harvest_to_workspace
    from sae_core.training.sweep import run_sweep as _run

    def job(ws):
        with session.using(model_name) as (model,):
            acts = harvest_to_workspace(ws, model_name, hook, n_tokens=n_tokens_harvest, text=text, model=model)
        return _run(ws, acts, sc, model=model, model_lock=session.model_lock(model_name), on_progress=on_progress)
    return results.build(root, job)
