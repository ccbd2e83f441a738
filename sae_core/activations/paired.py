"""Paired harvests: two models (or two hooks) over the same token rows, row i of each store being the
same (document, position).

``paired_to_workspace(ws, (model_a, hook_a), (model_b, hook_b), n_tokens=...)`` harvests both sides
with one text config (so both tokenize the same documents into the same rows: the tokenizers must
be the same, checked) and registers a ``paired`` artifact that names the two activation artifacts
and lists both inputs; ``paired_grid_to_workspace`` does it for every hook pair of two hook lists,
running each model once for all its hooks. ``PairedStores.open`` checks what makes the pairing true rather than
assuming it: both stores' row keys (``ActivationStore.row_keys``) are equal, and so are their shard
layouts, so one seeded shuffle (``iter_batches``) draws the same rows from both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from sae_core.activations.buffer import iter_batches
from sae_core.activations.job import harvest_to_workspace
from sae_core.activations.store import ActivationStore
from sae_core.errors import ArtifactError, SAECoreError
from sae_core.models.texts import TextSource
from sae_core.models.tokenizer import same_tokenizer
from sae_core.workspace import Artifact, Workspace, artifact_name

KIND = "paired"


@dataclass(frozen=True)
class PairedStores:
    a: ActivationStore
    b: ActivationStore

    @classmethod
    def open(cls, path_a, path_b) -> "PairedStores":
        a, b = ActivationStore.open(path_a), ActivationStore.open(path_b)
        if a.shard_rows != b.shard_rows:
            raise ArtifactError(f"{a.path} and {b.path} are laid out differently ({a.n_tokens} and {b.n_tokens} "
                                "rows); harvest both sides with paired_to_workspace")
        for ka, kb, what in zip(a.row_keys(), b.row_keys(), ("document", "position")):
            if not torch.equal(ka, kb):
                first = int((ka != kb).nonzero()[0])
                raise ArtifactError(f"{a.path} and {b.path} disagree on the {what} of row {first}; they are "
                                    "not the same token rows, so they cannot be paired")
        return cls(a, b)

    @property
    def n_tokens(self) -> int:
        return self.a.n_tokens

    def batches(self, batch_size: int, *, seed: int = 0, rows: tuple[int, int] | None = None,
                shuffle: bool = True, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(x [b, d_a], y [b, d_b])`` of the same rows: one seeded shuffle over both stores."""
        kw = dict(seed=seed, rows=rows, shuffle=shuffle, start=start)
        return zip(iter_batches(self.a, batch_size, **kw), iter_batches(self.b, batch_size, **kw))


def paired_to_workspace(ws: Workspace, side_a: tuple[str, str], side_b: tuple[str, str], *, n_tokens: int,
                        seed: int = 0, context_size: int = 64, text: TextSource | None = None,
                        load: Callable[[str], object] | None = None,
                        on_progress: Callable[[int, int], None] | None = None) -> Artifact:
    """Harvest (or reuse) both sides and register the pair (module doc)."""
    (model_a, hook_a), (model_b, hook_b) = side_a, side_b
    text = text or TextSource()
    cfg = {"a": list(side_a), "b": list(side_b), "n_tokens": n_tokens, "seed": seed,
           "context_size": context_size, "corpus": text.to_json() or "zoo-corpus"}
    name = artifact_name(model_b, hook_b, cfg)
    if (existing := ws.get(KIND, name)) is not None:
        return existing
    if load is None:
        from sae_core.models.loading import load_model as load
    ma, mb = load(model_a), load(model_b)
    same_tokenizer(ma.tokenizer, mb.tokenizer, SAECoreError)
    kw = dict(n_tokens=n_tokens, seed=seed, context_size=context_size, text=text, on_progress=on_progress)
    arts = [harvest_to_workspace(ws, model_a, hook_a, model=ma, **kw),
            harvest_to_workspace(ws, model_b, hook_b, model=mb, **kw)]
    pair = PairedStores.open(arts[0].path, arts[1].path)
    inputs = [{"model": model_a, "hook": hook_a, "side": "a"}, {"model": model_b, "hook": hook_b, "side": "b"}]
    meta = {"inputs": inputs, "activations": [a.name for a in arts], "n_tokens": pair.n_tokens,
            "source": arts[0].meta.get("source")}
    with ws.create(KIND, name, model=model_b, hook=hook_b, meta=meta, overwrite=True):
        pass
    return ws.get(KIND, name)


def paired_grid_to_workspace(ws: Workspace, model_a: str, hooks_a: list[str], model_b: str, hooks_b: list[str], *,
                             n_tokens: int, seed: int = 0, context_size: int = 64, text: TextSource | None = None,
                             load: Callable[[str], object] | None = None,
                             on_progress: Callable[[int, int], None] | None = None) -> dict[tuple[str, str], Artifact]:
    """A ``paired`` artifact for every hook pair of ``hooks_a`` x ``hooks_b``, each model run once
    for all its hooks (``harvest_hooks_to_workspace``); the same artifacts ``paired_to_workspace``
    makes one pair at a time. ``on_progress`` counts model A's texts, then model B's."""
    from sae_core.activations.job import harvest_hooks_to_workspace

    text = text or TextSource()
    if load is None:
        from sae_core.models.loading import load_model as load
    ma, mb = load(model_a), load(model_b)
    same_tokenizer(ma.tokenizer, mb.tokenizer, SAECoreError)
    kw = dict(n_tokens=n_tokens, seed=seed, context_size=context_size, text=text)
    for i, (name, model, hooks) in enumerate(((model_a, ma, hooks_a), (model_b, mb, hooks_b))):
        harvest_hooks_to_workspace(ws, name, list(hooks), model=model, **kw, on_progress=on_progress and (
            lambda d, t, i=i: on_progress(i * t + d, 2 * t)))
    return {(ha, hb): paired_to_workspace(ws, (model_a, ha), (model_b, hb), load=load, **kw)
            for ha in hooks_a for hb in hooks_b}


def open_paired(ws: Workspace, art: Artifact) -> PairedStores:
    """The two stores of a ``paired`` artifact."""
    paths = [ws.artifact_dir("activations", n) for n in art.meta["activations"]]
    return PairedStores.open(*paths)
