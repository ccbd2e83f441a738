"""The Features page's cached reads (SAEs, feature indexes) and its jobs (build an index, try a text)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from sae_app import listing, results, session
from sae_core.models.texts import TextSource
from sae_core.workspace import Artifact


def list_saes(root: str, model: str | None, hook: str | None) -> list[Artifact]:
    """SAEs in the workspace trained at ``model``/``hook``: those with a feature index first (what the
    page opens on: the demo's universality SAE, newer, has none), each group newest first."""
    indexed = {a.meta.get("sae") for a in listing.list_artifacts(root, "feature_index")}
    saes = [a for a in listing.list_artifacts(root, "sae") if a.model == model and a.hook == hook]
    return sorted(saes, key=lambda a: a.name not in indexed and str(a.path) not in indexed)  # stable


def _mtime(path: str) -> float:
    from sae_core.sae.io import CFG_FILE, WEIGHTS_FILE

    p = Path(path)
    return max((p / f).stat().st_mtime for f in (CFG_FILE, WEIGHTS_FILE) if (p / f).exists())


@st.cache_resource(max_entries=8, show_spinner="Loading SAE…")
def _load_sae(path: str, mtime: float):
    from sae_core.features.build import sae_fingerprint
    from sae_core.sae.io import load_sae

    sae = load_sae(Path(path))
    return sae, sae_fingerprint(sae)


def load_sae(path: str):
    """``(sae, fingerprint)`` for an SAE directory; shared read-only (encode only, in eval mode)."""
    from sae_core.errors import ArtifactError

    if not Path(path).is_dir():
        raise ArtifactError(f"{path} is not a directory; give an SAE directory (cfg.json + "
                            "sae_weights.safetensors)")
    return _load_sae(path, _mtime(path))


def indexes_for(root: str, fingerprint: str) -> list[Artifact]:
    return [a for a in listing.list_artifacts(root, "feature_index")
            if a.meta.get("sae_fingerprint") == fingerprint]


@st.cache_resource(max_entries=8, show_spinner="Opening feature index…")
def open_index(path: str, created: float):
    """A ``FeatureIndex`` (memory-mapped files; reading only)."""
    from sae_core.features.index import FeatureIndex

    return FeatureIndex.open(path)


@st.cache_data(show_spinner=False, max_entries=8)
def index_overview(path: str, created: float) -> pd.DataFrame:
    return open_index(path, created).overview()


def build_index(root: str, sae_path: str, model_name: str, hook: str, *, n_tokens: int,
                feature_map: bool, text: TextSource | None = None, on_progress=None,
                on_stage=None) -> Artifact:
    """Build the SAE's feature index with the cached model (under its lock)."""
    from sae_core.features.job import index_to_workspace
    from sae_core.features.config import IndexConfig

    sae, _ = load_sae(sae_path)
    return results.build(root, lambda ws, model: index_to_workspace(
        ws, sae, model_name, hook, IndexConfig(n_tokens=n_tokens, feature_map=feature_map), sae_source=sae_path,
        model=model, text=text, on_progress=on_progress, on_stage=on_stage), models=(model_name,))


def try_text(sae_path: str, model_name: str, hook: str, text: str, feature: int):
    """Per-token activations of ``feature`` on ``text`` (``TextActivations``)."""
    from sae_core.features.probe import feature_acts_on_text

    sae, _ = load_sae(sae_path)
    with session.using(model_name) as (model,):
        return feature_acts_on_text(model, sae, hook, text, feature)
