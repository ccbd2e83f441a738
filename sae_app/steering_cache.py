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


def side_by_side(path: str, created: float, prompt: str, *, n_tokens: int, alpha: float,
                 enabled: tuple[str, ...]):
    from sae_core.steering.compare import side_by_side as compare

    study = open_study(path, created)
    base_name, ft_name = study.config["base_model"], study.config["target_model"]
    base, ft = cache.load_model(base_name), cache.load_model(ft_name)
    with cache._model_lock(base_name), cache._model_lock(ft_name):
        return compare(study, base, ft, prompt, n_tokens=n_tokens, alpha=alpha, enabled=enabled)


def build_study(root: str, on_progress=None):
    from sae_core.steering.study import StudyConfig, steering_study_to_workspace

    cfg = StudyConfig()
    names = {cfg.source_model, cfg.target_model, cfg.base_model}
    locks = [cache._model_lock(n) for n in sorted(names)]
    for lock in locks:
        lock.acquire()
    try:
        art = steering_study_to_workspace(cache.open_workspace(root), cfg, load=cache.load_model,
                                          on_progress=on_progress)
    finally:
        for lock in reversed(locks):
            lock.release()
    cache.list_artifacts.clear()
    return art
