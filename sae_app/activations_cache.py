"""The Activations page's cached reads and its harvest job."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import streamlit as st

from sae_app import results
from sae_core.models.texts import TextSource
from sae_core.workspace import Artifact


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

    return results.build(root, lambda ws, model: harvest_to_workspace(
        ws, model_name, hook, n_tokens=n_tokens, context_size=context_size, exclude_special=exclude_special,
        text=text, on_progress=on_progress, model=model), models=(model_name,))
