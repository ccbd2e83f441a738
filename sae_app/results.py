"""The workspace's result artifacts as the pages use them: listed, opened (cached), built by a job.

Each analysis (a steering study, corrupted capabilities, universality, its layer grid, a circuits
study) writes artifacts of one kind that its result class reads back with ``open(path)``. A cache
module declares ``Results(KIND, ResultClass)`` and hands out its ``list`` and ``open``: listings
are ``listing``'s (short-lived, forgotten by ``listing.changed()``), and an opened result is shared
read-only by every session, keyed on its path and creation time so that a rebuilt artifact opens
anew. ``build`` runs any job that writes an artifact and then refreshes the listings.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import streamlit as st

from sae_app import listing, session
from sae_core.workspace import Artifact


@dataclass(frozen=True)
class Results:
    """The artifacts of ``kind``, each read by ``result_class.open(path)``."""
    kind: str
    result_class: type

    def list(self, root: str) -> list[Artifact]:
        """The workspace's results of this kind, newest first."""
        return listing.list_artifacts(root, self.kind)

    def open(self, path: str, created: float):
        """The result at ``path`` (``created`` keys out a rebuilt one); never mutate it."""
        return _open(self.kind, path, created, self.result_class)


@st.cache_resource(max_entries=24, show_spinner=False)  # the five kinds kept 4 or 8 each, apart
def _open(kind: str, path: str, created: float, _result_class: type):
    return _result_class.open(Path(path))


def build(root: str, job: Callable[..., Artifact], models: tuple[str, ...] = ()) -> Artifact:
    """``job(workspace, *models)`` with ``models`` loaded and their locks held (a job that loads them
    itself through ``session.load_model`` ignores them; with none, the job takes the locks it needs),
    then ``listing.changed()``, so every page lists the new artifact at once."""
    ws = listing.open_workspace(root)
    with session.using(*models) as loaded:
        art = job(ws, *loaded)
    listing.changed()
    return art
