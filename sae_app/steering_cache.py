"""The Steering & switches page's cached reads and jobs.

Generation adds hooks, so it runs inside ``session.using``; each rerun only generates (the study's
vectors and mappers are read once per study and alpha)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from sae_app import listing, session
from sae_core.steering.study import KIND, Study


def list_studies(root: str):
    return listing.list_artifacts(root, KIND)


@st.cache_resource(max_entries=4, show_spinner=False)
def open_study(path: str, created: float) -> Study:
    return Study.open(Path(path))


@st.cache_data(max_entries=32, show_spinner=False)
def _plain(base_name: str, ft_name: str, prompt: str, n_tokens: int):
    """The two columns without interventions: moving alpha or a toggle does not regenerate them."""
    from sae_core.steering.compare import plain_columns

    with session.using(base_name, ft_name) as (base, ft):
        return plain_columns(base, ft, prompt, n_tokens)


def side_by_side(path: str, created: float, prompt: str, *, n_tokens: int, alpha: float,
                 enabled: tuple[str, ...]):
    """(columns, unknown words) for the page: ``compare.side_by_side`` with the plain columns cached."""
    from sae_core.models.loading import unknown_words
    from sae_core.steering.compare import steered_columns

    study = open_study(path, created)
    base_name, ft_name = study.config["base_model"], study.config["target_model"]
    cols = list(_plain(base_name, ft_name, prompt, n_tokens))
    with session.using(ft_name) as (ft,):
        cols += steered_columns(study, ft, prompt, n_tokens=n_tokens, alpha=alpha, enabled=enabled)
        unknown = unknown_words(ft, prompt)
    return cols, unknown


def build_study(root: str, on_progress=None):
    from sae_core.steering.study import StudyConfig, steering_study_to_workspace

    cfg = StudyConfig()
    with session.using(*sorted({cfg.source_model, cfg.target_model, cfg.base_model})):
        art = steering_study_to_workspace(listing.open_workspace(root), cfg, load=session.load_model,
                                          on_progress=on_progress)
    listing.changed()
    return art


def list_capabilities(root: str):
    from sae_core.steering.capabilities import KIND as CAP_KIND

    return listing.list_artifacts(root, CAP_KIND)


@st.cache_resource(max_entries=4, show_spinner=False)
def open_capabilities(path: str, created: float):
    from sae_core.steering.capabilities import Capabilities

    return Capabilities.open(Path(path))


def build_capabilities(root: str, on_progress=None):
    from sae_core.steering.capabilities import CapabilitiesConfig, capabilities_to_workspace

    cfg = CapabilitiesConfig()
    with session.using(cfg.source_model, cfg.target_model):
        art = capabilities_to_workspace(listing.open_workspace(root), cfg, load=session.load_model,
                                        on_progress=on_progress)
    listing.changed()
    return art
