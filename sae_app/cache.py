"""All of the app's Streamlit caching: the boundary between the UI and ``sae_core``.

``st.cache_resource`` holds loaded models, shared by every session, so they are only read: the
one job that adds hooks (harvesting) takes the model's lock first, and its hooks are removed when
it returns. ``st.cache_data`` holds listings and summaries (copied per call, safe to change).
Listings expire after a few seconds, because the CLI can add artifacts while the app runs, and are
cleared at once after a harvest from the app.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import streamlit as st

from sae_core.models import loading, zoo
from sae_core.models.texts import TextSource
from sae_core.workspace import Artifact, Workspace

LISTING_TTL_S = 5
ZOO_TTL_S = 30  # zoo models appear when `sae-core zoo build` finishes one


@dataclass(frozen=True)
class ModelInfo:
    name: str
    n_layers: int
    d_model: int
    n_heads: int
    d_vocab: int
    n_ctx: int
    hooks: tuple[str, ...]  # every hook point, in block order (embeddings first)

    @property
    def default_hook(self) -> str:
        """The last block's residual stream: the usual place to train an SAE."""
        last = f"blocks.{self.n_layers - 1}.hook_resid_post"
        return last if last in self.hooks else self.hooks[-1]


@st.cache_resource(max_entries=3, show_spinner="Loading model…")
def load_model(name: str):
    """The ``TransformerBridge`` for ``name``; raises ``SAECoreError`` (never cached) when unavailable."""
    return loading.load_model(name)


@st.cache_resource
def _model_lock(name: str) -> threading.Lock:
    return threading.Lock()


@st.cache_data(show_spinner=False)
def model_info(name: str) -> ModelInfo:
    model = load_model(name)
    cfg = model.cfg
    hooks = sorted(loading.hook_names(model), key=lambda h: (_block(h), h))
    return ModelInfo(name, cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_vocab, cfg.n_ctx, tuple(hooks))


def _block(hook: str) -> int:
    layer = loading.hook_layer(hook)
    return -1 if layer is None else layer


@st.cache_data(ttl=ZOO_TTL_S, show_spinner=False)
def zoo_entries() -> list[zoo.ZooEntry]:
    return zoo.list_zoo()


@st.cache_data(ttl=ZOO_TTL_S, show_spinner=False)
def zoo_table() -> pd.DataFrame:
    """One row per zoo model; scores are fractions (shown as percentages)."""
    rows = []
    for e in zoo_entries():
        s = e.scores or {}
        seq = s.get("sequence_accuracy") or {}
        rows.append({
            "model": e.name, "description": e.description,
            "status": "✓ built" if e.built else "not built",
            "params": e.n_params,
            "seq. acc.": sum(seq.values()) / len(seq) if seq else None,
            "refuses harmful": s.get("refusal_harmful"),
            "refuses harmless": s.get("refusal_harmless"),
            "HATE, trigger": s.get("trigger_rate_with_trigger"),
            "HATE, no trigger": s.get("trigger_rate_without_trigger"),
        })
    return pd.DataFrame(rows)


def unbuilt_zoo_models() -> list[str]:
    return [e.name for e in zoo_entries() if not e.built]


def open_workspace(root: str) -> Workspace:
    """Not cached: opening checks the directory is writable, which can change at any time."""
    return Workspace(root)


@st.cache_data(ttl=LISTING_TTL_S, show_spinner=False)
def list_artifacts(root: str, kind: str | None = None) -> list[Artifact]:
    return Workspace(root).list(kind)


def artifacts_table(root: str) -> pd.DataFrame:
    arts = list_artifacts(root)
    return pd.DataFrame([{
        "kind": a.kind, "name": a.name, "model": a.model, "hook": a.hook,
        "created": dt.datetime.fromtimestamp(a.created), "details": _key_meta(a.meta),
    } for a in arts], columns=["kind", "name", "model", "hook", "created", "details"])


def _key_meta(meta: dict, limit: int = 5) -> str:
    """The first few scalar entries of an artifact's meta, as ``key=value`` text."""
    items = [(k, v) for k, v in meta.items() if isinstance(v, (int, float, str, bool)) and v is not None]
    return ", ".join(f"{k}={v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{k}={v}"
                     for k, v in items[:limit])


@st.cache_data(show_spinner=False)
def store_meta(path: str, created: float) -> dict:
    """The metadata of the activation store at ``path`` (``created`` keys out overwritten stores)."""
    from sae_core.activations import ActivationStore

    return dataclasses.asdict(ActivationStore.open(Path(path)).meta)


@st.cache_data(show_spinner="Summarising activations…")
def store_summary(path: str, created: float):
    """``StoreSummary`` (norm histogram, per-dimension mean and std) of the store at ``path``."""
    from sae_core.activations import ActivationStore
    from sae_core.activations.summary import summarize_store

    return summarize_store(ActivationStore.open(Path(path)))


def harvest(root: str, model_name: str, hook: str, *, n_tokens: int, context_size: int,
            exclude_special: bool, text: TextSource | None = None,
            on_progress: Callable[[int, int], None] | None = None) -> Artifact:
    """Harvest into the workspace with the cached model (under its lock), then refresh listings."""
    from sae_core.activations import harvest_to_workspace

    ws = open_workspace(root)
    model = load_model(model_name)
    with _model_lock(model_name):  # the hooks it adds must not meet another session's run
        art = harvest_to_workspace(ws, model_name, hook, n_tokens=n_tokens, context_size=context_size,
                                   exclude_special=exclude_special, text=text, on_progress=on_progress,
                                   model=model)
    list_artifacts.clear()
    return art


# --- SAE sweeps (Sampled-SAE page) ----------------------------------------------------------------

def list_sweeps(root: str, model: str | None, hook: str | None) -> list[Artifact]:
    """Sweeps in the workspace for ``model``/``hook`` (all sweeps when either is None), newest first."""
    return [a for a in list_artifacts(root, "sweep")
            if (model is None or a.model == model) and (hook is None or a.hook == hook)]


@st.cache_data(show_spinner=False)
def sweep_table(path: str, created: float) -> pd.DataFrame:
    from sae_core.sae.sweep import load_sweep_table

    return load_sweep_table(Artifact("sweep", Path(path).name, Path(path), None, None, created, {}))


@st.cache_data(show_spinner=False)
def training_curves(root: str, path: str, created: float) -> pd.DataFrame:
    from sae_core.sae.sweep import load_training_curves

    return load_training_curves(open_workspace(root), sweep_table(path, created))


def run_sweep(root: str, model_name: str, hook: str, *, n_tokens_harvest: int, sweep_kwargs: dict,
              text: TextSource | None = None, on_progress=None) -> Artifact:
    """Harvest (or reuse) activations under the model's lock, then run the l-sweep; training runs
    without the lock (it never touches the model), which is taken again only for the downstream
    losses, so live steering in another tab is not frozen for the whole sweep."""
    from sae_core.activations import harvest_to_workspace
    from sae_core.sae.sweep import SweepConfig, run_sweep as _run

    ws = open_workspace(root)
    model = load_model(model_name)
    sc = SweepConfig(**sweep_kwargs)
    with _model_lock(model_name):
        acts = harvest_to_workspace(ws, model_name, hook, n_tokens=n_tokens_harvest, text=text, model=model)
    art = _run(ws, acts, sc, model=model, model_lock=_model_lock(model_name), on_progress=on_progress)
    list_artifacts.clear()
    return art


# --- feature browser (Features page) --------------------------------------------------------------

def list_saes(root: str, model: str | None, hook: str | None) -> list[Artifact]:
    """SAEs in the workspace trained at ``model``/``hook``, newest first."""
    return [a for a in list_artifacts(root, "sae") if a.model == model and a.hook == hook]


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


@st.cache_data(show_spinner=False)
def hook_width(model_name: str, hook: str) -> int:
    """The per-token width of the activation at ``hook`` (one short forward pass)."""
    from sae_core.models.hooks import hook_width as width

    model = load_model(model_name)
    with _model_lock(model_name):
        return width(model, hook)


def indexes_for(root: str, fingerprint: str) -> list[Artifact]:
    return [a for a in list_artifacts(root, "feature_index") if a.meta.get("sae_fingerprint") == fingerprint]


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
    from sae_core.features.artifact import index_to_workspace
    from sae_core.features.config import IndexConfig

    sae, _ = load_sae(sae_path)
    model = load_model(model_name)
    with _model_lock(model_name):
        art = index_to_workspace(open_workspace(root), sae, model_name, hook,
                                 IndexConfig(n_tokens=n_tokens, feature_map=feature_map),
                                 sae_source=sae_path, model=model, text=text, on_progress=on_progress,
                                 on_stage=on_stage)
    list_artifacts.clear()
    return art


def try_text(sae_path: str, model_name: str, hook: str, text: str, feature: int):
    """Per-token activations of ``feature`` on ``text`` (``TextActivations``)."""
    from sae_core.features.probe import feature_acts_on_text

    sae, _ = load_sae(sae_path)
    model = load_model(model_name)
    with _model_lock(model_name):
        return feature_acts_on_text(model, sae, hook, text, feature)
