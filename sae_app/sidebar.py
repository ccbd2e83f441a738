"""The sidebar every page shares: workspace, model and hook pickers.

``render()`` runs in ``app.py`` before the page, so the widgets (and their values) persist across
page switches; the resolved choice is kept in ``st.session_state["selection"]`` and pages read it
with ``current()``. A bad choice is shown here with ``st.error`` and recorded in the selection, so
a page can say why it has nothing to show instead of failing.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from sae_app import listing, session
from sae_core.errors import SAECoreError
from sae_core.models.random_arch import describe, is_random
from sae_core.workspace import default_root

NOT_BUILT = " (not built)"


@dataclass(frozen=True)
class Selection:
    workspace_root: str | None  # the resolved, writable workspace directory
    workspace_error: str | None
    model_name: str | None
    model_error: str | None
    hook: str | None

    @property
    def ready(self) -> bool:
        """A usable workspace, model and hook: what every job needs."""
        return not (self.workspace_error or self.model_error) and bool(self.hook)


GOTO = "sb_goto"


def request(model_name: str, hook: str) -> None:
    """Select this model and hook on the next run (from a widget callback: the sidebar's widgets
    take the new values before they are drawn)."""
    st.session_state[GOTO] = (model_name, hook)


def _apply_request() -> None:
    if (goto := st.session_state.pop(GOTO, None)) is None:
        return
    model_name, hook = goto
    if model_name in {e.name for e in listing.zoo_entries()}:
        st.session_state["sb_zoo_model"], st.session_state["sb_model_text"] = model_name, ""
    else:
        st.session_state["sb_model_text"] = model_name
    st.session_state[f"sb_hook::{model_name}"] = hook


def render() -> Selection:
    _apply_request()
    with st.sidebar:
        root, ws_error = _workspace_picker()
        st.divider()
        model_name, model_error = _model_picker()
        hook = _hook_picker(model_name) if model_name and not model_error else None
    sel = Selection(root, ws_error, model_name, model_error, hook)
    st.session_state["selection"] = sel
    st.session_state["workspace_root"], st.session_state["model_name"] = root, model_name
    st.session_state["hook"] = hook
    return sel


def current() -> Selection:
    """The sidebar's choice for this run (``render`` has always run before a page)."""
    return st.session_state["selection"]


def _workspace_picker() -> tuple[str | None, str | None]:
    st.session_state.setdefault("sb_workspace", str(default_root()))
    path = st.text_input("Workspace directory", key="sb_workspace",
                         help="Where harvested activations, SAEs and analyses are stored.")
    try:
        # an emptied field means the default workspace, never the current directory (which put a
        # registry.sqlite at the repository root, issue #27)
        ws = listing.open_workspace(path.strip() or str(default_root()))
    except SAECoreError as e:
        st.error(str(e))
        return None, str(e)
    st.caption(f"Using `{ws.root}`")
    return str(ws.root), None


def _model_picker() -> tuple[str | None, str | None]:
    entries = listing.zoo_entries()
    built = {e.name for e in entries if e.built}
    names = [e.name for e in entries]
    default = next((i for i, n in enumerate(names) if n in built), 0)
    zoo_choice = st.selectbox("Model", names, index=default, key="sb_zoo_model",
                              format_func=lambda n: n if n in built else n + NOT_BUILT)
    typed = st.text_input("…or a hub name or local directory", key="sb_model_text",
                          placeholder="EleutherAI/pythia-160m, random:pythia-160m or /path/to/model",
                          help="Takes precedence over the zoo choice above while not empty.").strip()
    name = typed or zoo_choice
    if not name:
        return None, "choose a model"
    try:
        info = session.model_info(name)
    except SAECoreError as e:
        # the page shows the whole message (what to do about it); the sidebar stays short
        st.error(f"Could not load `{name}`.", icon=":material/error:")
        return name, str(e)
    st.caption(f"{info.n_layers} layers · d_model {info.d_model} · vocab {info.d_vocab:,}")
    if is_random(name):
        st.caption(f":orange[{describe(name)}: for timing and scaling, its features mean nothing]")
    return name, None


def _hook_picker(model_name: str) -> str:
    info = session.model_info(model_name)
    # keyed by model: a new model starts from its own default hook, not the last model's
    return st.selectbox("Hook", info.hooks, index=info.hooks.index(info.default_hook),
                        key=f"sb_hook::{model_name}")
