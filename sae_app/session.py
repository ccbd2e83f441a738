"""The model session every browser tab shares: cached models and the lock each is used under.

``st.cache_resource`` holds loaded models, shared by every session, so they are only read; a pass
that adds hooks (harvesting, steering, indexing, downstream losses) runs inside ``using(...)``,
which holds those models' locks, and its hooks are removed when it returns. Work that never touches
a model (SAE training, reading artifacts) takes no lock, so one tab's job does not freeze another's
live steering.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import streamlit as st

from sae_core.models import loading


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
def model_lock(name: str) -> threading.Lock:
    """The lock a pass with hooks on model ``name`` holds (one per model, shared by all tabs)."""
    return threading.Lock()


@contextmanager
def using(*names: str) -> Iterator[tuple]:
    """The cached models ``names`` (in that order), with their locks held until the block ends.

    Locks are taken in sorted name order, so two jobs holding overlapping sets never deadlock."""
    models = tuple(load_model(n) for n in names)  # loading first: a slow load holds no lock
    locks = [model_lock(n) for n in sorted(set(names))]
    for lock in locks:
        lock.acquire()
    try:
        yield models
    finally:
        for lock in reversed(locks):
            lock.release()


@st.cache_data(show_spinner=False)
def model_info(name: str) -> ModelInfo:
    model = load_model(name)
    cfg = model.cfg
    hooks = sorted(loading.hook_names(model), key=lambda h: (_block(h), h))
    return ModelInfo(name, cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_vocab, cfg.n_ctx, tuple(hooks))


def _block(hook: str) -> int:
    layer = loading.hook_layer(hook)
    return -1 if layer is None else layer


@st.cache_data(show_spinner=False)
def hook_width(model_name: str, hook: str) -> int:
    """The per-token width of the activation at ``hook`` (one short forward pass)."""
    from sae_core.models.hooks import hook_width as width

    with using(model_name) as (model,):
        return width(model, hook)
