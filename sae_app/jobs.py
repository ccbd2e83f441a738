"""Running a long library job from a page: a status box with a live progress bar, errors shown."""
from __future__ import annotations

from typing import Callable

import streamlit as st

from sae_app import demo_build

from sae_core.errors import SAECoreError
from sae_core.workspace import Artifact


def run_job(title: str, job: Callable[[object], Artifact], *, select_key: str) -> Artifact | None:
    """Run ``job(progress_bar)`` inside ``st.status``; on success select its artifact in ``select_key``.

    A ``SAECoreError`` is shown with ``st.error`` (its message says what to do), never raised.
    """
    with st.status(title, expanded=True) as status:
        bar = st.progress(0.0, text="starting…")
        try:
            art = job(bar)
        except SAECoreError as e:
            status.update(label=f"{title.rstrip('…')}: failed", state="error")
            st.error(str(e))
            return None
        status.update(label=f"Done: `{art.name}`", state="complete", expanded=False)
        st.session_state[select_key] = art.name
        return art


def build_button(label: str, *, key: str, title: str, build: Callable, root: str, select_key: str,
                 primary: bool = False, disabled: bool = False) -> None:
    """A button that runs ``build(root, on_progress)`` with a live progress bar; the page reruns
    with the result on success."""
    if st.button(label, type="primary" if primary else "secondary", key=key, disabled=disabled):
        if run_job(title, lambda bar: build(root, lambda d, t, text: bar.progress(min(d / t, 1.0), text=text)),
                   select_key=select_key):
            st.rerun()


def offer_build(info: str, label: str, *, key: str, title: str, build: Callable, root: str, select_key: str,
                kind: str) -> None:
    """A page with nothing of ``kind`` to show yet: while the demo build makes it, show its progress;
    else say so, offer a ``build_button``; either way stop the page here."""
    demo_build.wait_for(root, kind)
    st.info(info)
    build_button(label, key=key, title=title, build=build, root=root, select_key=select_key, primary=True)
    st.stop()
