"""The Steering & switches page's cached reads and jobs.

Generation adds hooks, so it runs inside ``session.using``; columns are cached per prompt, length
and alpha (the study's vectors and mappers are read once per study and alpha)."""
from __future__ import annotations

import streamlit as st

from sae_app import results, session
from sae_core.steering.capabilities import KIND as CAPABILITIES_KIND, Capabilities
from sae_core.steering.gated_switch import KIND as GATE_KIND, GateResults
from sae_core.steering.study import KIND, Study

STUDIES = results.Results(KIND, Study)
CAPABILITIES = results.Results(CAPABILITIES_KIND, Capabilities)
list_studies, open_study = STUDIES.list, STUDIES.open


def study_label(art) -> str:
    """A study as the selector shows it: its target model, what sets it apart, its hash."""
    cfg = open_study(str(art.path), art.created).config
    return " · ".join([cfg["target_model"], f"{cfg.get('mode', 'default')} mode",
                       f"backdoor vectors: span {cfg.get('reduce', 'mean')}",
                       f"switch {cfg.get('switch_layer', 'fixed')}", art.name.rsplit("__", 1)[-1]])
list_capabilities, open_capabilities = CAPABILITIES.list, CAPABILITIES.open
GATES = results.Results(GATE_KIND, GateResults)
open_gate = GATES.open


def gate_of(root: str, study_name: str):
    """The newest gated switch of the study ``study_name`` (None: it has none)."""
    return next((a for a in GATES.list(root) if a.meta.get("study") == study_name), None)


@st.cache_data(max_entries=32, show_spinner=False)
def _plain(base_name: str, ft_name: str, prompt: str, n_tokens: int):
    """The two columns without interventions: moving alpha or a toggle does not regenerate them."""
    from sae_core.steering.compare import plain_columns

    with session.using(base_name, ft_name) as (base, ft):
        return plain_columns(base, ft, prompt, n_tokens)


@st.cache_data(max_entries=64, show_spinner=False)
def _steered(path: str, created: float, prompt: str, n_tokens: int, alpha: float):
    """Every intervention's column, in one batched generation: a toggle then only chooses which to
    show, and never generates (it took seconds, issue #28)."""
    from sae_core.steering.compare import steered_columns

    study = open_study(path, created)
    with session.using(study.config["target_model"]) as (ft,):
        return steered_columns(study, ft, prompt, n_tokens=n_tokens, alpha=alpha)


def side_by_side(path: str, created: float, prompt: str, *, n_tokens: int, alpha: float,
                 enabled: tuple[str, ...]):
    """(columns, the prompt as read) for the page: ``compare.side_by_side`` with every column
    cached. An empty prompt raises ``PromptError`` before anything generates."""
    from sae_core.models.generation import read_prompt
    from sae_core.steering.compare import INTERVENTIONS

    study = open_study(path, created)
    base_name, ft_name = study.config["base_model"], study.config["target_model"]
    with session.using(ft_name) as (ft,):
        read = read_prompt(ft, prompt)
    cols = list(_plain(base_name, ft_name, prompt, n_tokens))
    if enabled:
        steered = _steered(path, created, prompt, n_tokens, alpha)
        cols += [c for name, c in zip(INTERVENTIONS, steered) if name in enabled]
    return cols, read


def build_study(root: str, on_progress=None):
    from sae_core.steering.job import steering_study_to_workspace
    from sae_core.steering.study import StudyConfig

    cfg = StudyConfig()
    return results.build(root, lambda ws, *_models: steering_study_to_workspace(
        ws, cfg, load=session.load_model, on_progress=on_progress),
        models=tuple(sorted({cfg.source_model, cfg.target_model, cfg.base_model})))


def build_capabilities(root: str, on_progress=None):
    from sae_core.steering.capabilities import CapabilitiesConfig
    from sae_core.steering.job import capabilities_to_workspace

    cfg = CapabilitiesConfig()
    return results.build(root, lambda ws, *_models: capabilities_to_workspace(
        ws, cfg, load=session.load_model, on_progress=on_progress), models=(cfg.source_model, cfg.target_model))


@st.cache_data(max_entries=32, show_spinner=False)
def gated_column(gate_path: str, gate_created: float, study_path: str, study_created: float, prompt: str,
                 n_tokens: int, threshold: float):
    """The gated switch's column at ``threshold`` (the gate's own, or the page's)."""
    from sae_core.steering.compare import gated_column as column

    study = open_study(study_path, study_created)
    spec = open_gate(gate_path, gate_created).intervention(study, threshold)
    with session.using(study.config["target_model"]) as (ft,):
        return column(spec, ft, prompt, n_tokens)


def build_gate(root: str, study_name: str, on_progress=None):
    from sae_core.steering.job import gate_to_workspace

    def job(ws):
        art = ws.get(KIND, study_name)
        return gate_to_workspace(ws, art, load=session.load_model, on_progress=on_progress)
    return results.build(root, job)
