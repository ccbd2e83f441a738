"""Cached listings of what exists: the zoo and the workspace's artifacts.

``st.cache_data`` copies per call, so callers may change what they get. Listings expire after a
few seconds, because the CLI can add artifacts while the app runs; a job that writes one calls
``changed()`` so the app sees it at once.
"""
from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from sae_core.errors import ArtifactError
from sae_core.models import zoo
from sae_core.models.random_arch import label
from sae_core.workspace import Artifact, Workspace, WorkspaceNotWritable, default_root

LISTING_TTL_S = 5
ZOO_TTL_S = 30  # zoo models appear when `sae-core zoo build` finishes one


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
    """Not cached: opening checks the directory is writable, which can change at any time. An
    unusable one says what to do in the app (the library's message names the CLI's option)."""
    try:
        return Workspace(root)
    except WorkspaceNotWritable as e:
        default = "" if e.root == default_root() else f" (or empty it for the default, {default_root()})"
        raise ArtifactError(f"workspace {e.root} is not writable ({e.reason}); type a writable directory in "
                            f"the sidebar's \"Workspace directory\" field{default}") from None


@st.cache_data(ttl=LISTING_TTL_S, show_spinner=False)
def list_artifacts(root: str, kind: str | None = None) -> list[Artifact]:
    return Workspace(root).list(kind)


def changed() -> None:
    """Forget every listing, after a job from the app wrote an artifact."""
    list_artifacts.clear()


def artifacts_table(root: str) -> pd.DataFrame:
    arts = list_artifacts(root)
    return pd.DataFrame([{
        "kind": a.kind, "name": a.name, "model": label(a.model), "hook": a.hook,
        "created": dt.datetime.fromtimestamp(a.created), "details": _key_meta(a.meta),
    } for a in arts], columns=["kind", "name", "model", "hook", "created", "details"])


def _key_meta(meta: dict, limit: int = 5) -> str:
    """The first few scalar entries of an artifact's meta, as ``key=value`` text."""
    items = [(k, v) for k, v in meta.items() if isinstance(v, (int, float, str, bool)) and v is not None]
    return ", ".join(f"{k}={v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{k}={v}"
                     for k, v in items[:limit])
