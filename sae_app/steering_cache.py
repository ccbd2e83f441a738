"""The Steering & switches page's cached reads and jobs (models from ``sae_app.cache``).

Generation adds hooks, so it runs under the models' locks; each rerun only generates (the
study's vectors and mappers are read once per study and alpha)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from sae_app import cache
from sae_core.steering.study import KIND, Study


def list_studies(root: str):
    return cache.list_artifacts(root, KIND)


@st.cache_resource(max_entries=4, show_spinner=False)
def open_study(path: str, created: float) -> Study:
    return Study.open(Path(path))


@st.cache_data(max_entries=32, show_spinner=False)
def _plain(base_name: str, ft_name: str, prompt: str, n_tokens: int):
    """The two columns without interventions: moving alpha or a toggle does not regenerate them."""
    from sae_core.steering.compare import plain_columns

    base, ft = cache.load_model(base_name), cache.load_model(ft_name)
    with cache._model_lock(base_name), cache._model_lock(ft_name):
        return plain_columns(base, ft, prompt, n_tokens)


def side_by_side(path: str, created: float, prompt: str, *, n_tokens: int, alpha: float,
                 enabled: tuple[str, ...]):
    """(columns, unknown words) for the page: ``compare.side_by_side`` with the plain columns cached."""
    from sae_core.models.loading import unknown_words
    from sae_core.steering.compare import steered_columns

    study = open_study(path, created)
    base_name, ft_name = study.config["base_model"], study.config["target_model"]
    ft = cache.load_model(ft_name)
    cols = list(_plain(base_name, ft_name, prompt, n_tokens))
    with cache._model_lock(ft_name):
        cols += steered_columns(study, ft, prompt, n_tokens=n_tokens, alpha=alpha, enabled=enabled)
    return cols, unknown_words(ft, prompt)


def build_study(root: str, on_progress=None):
    from sae_core.steering.study import StudyConfig, steering_study_to_workspace

    cfg = StudyConfig()
    return _build_holding({cfg.source_model, cfg.target_model, cfg.base_model}, lambda: steering_study_to_workspace(
        cache.open_workspace(root), cfg, load=cache.load_model, on_progress=on_progress))


def _build_holding(models: set[str], build):
    """``build()`` with the locks of ``models`` held (it runs them with hooks), then refresh the lists."""
    locks = [cache._model_lock(n) for n in sorted(models)]
    for lock in locks:
        lock.acquire()
    try:
        art = build()
    finally:
        for lock in reversed(locks):
            lock.release()
    cache.list_artifacts.clear()
    return art


def list_capabilities(root: str):
    from sae_core.steering.capabilities import KIND as CAP_KIND

    return cache.list_artifacts(root, CAP_KIND)


@st.cache_resource(max_entries=4, show_spinner=False)
def open_capabilities(path: str, created: float):
    from sae_core.steering.capabilities import Capabilities

    return Capabilities.open(Path(path))


def build_capabilities(root: str, on_progress=None):
    from sae_core.steering.capabilities import CapabilitiesConfig, capabilities_to_workspace

    cfg = CapabilitiesConfig()
    return _build_holding({cfg.source_model, cfg.target_model}, lambda: capabilities_to_workspace(
        cache.open_workspace(root), cfg, load=cache.load_model, on_progress=on_progress))
