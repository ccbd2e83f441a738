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


@st.cache_data(show_spinner=False)
def sweep_table(path: str, created: float) -> pd.DataFrame:
    from sae_core.training.sweep import load_sweep_table

    return load_sweep_table(Artifact("sweep", Path(path).name, Path(path), None, None, created, {}))


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
