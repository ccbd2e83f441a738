"""A matched pair's top activations in context, on both sides, from the paired harvest.

``pair_contexts(ws, result, i, tokenizer)`` reads the rows that ``code_pass`` recorded for pair
``i`` (each side's strongest activations of its feature), and around each row the tokens of the
same document: ``before`` tokens up to and including it and ``after`` tokens past it. Each
context's activations are the side's SAE re-encoding those rows of its own store, so a context
shows where around its peak the feature also fires. Returns ``{"a": [Example], "b": [Example]}``
(the feature browser's ``Example``, so the app draws them the same way).

Both sides were harvested over the same token rows, so row r is the same document and position
on each: the two columns of contexts are directly comparable.
"""
from __future__ import annotations

import torch

from sae_core.activations.paired import open_paired
from sae_core.activations.store import ActivationStore
from sae_core.features.index import Example
from sae_core.models.tokens import display_tokens
from sae_core.universality.measures import UniversalityError
from sae_core.workspace import Workspace

BEFORE, AFTER = 10, 3


def _read_rows(store: ActivationStore, rows: torch.Tensor) -> torch.Tensor:
    """``[len(rows), d]`` activations of the given store rows (each shard read once)."""
    ends = torch.cumsum(torch.tensor(store.shard_rows), 0)
    shard_of = torch.searchsorted(ends, rows, right=True)
    out = torch.empty(rows.numel(), store.d)
    for s in shard_of.unique().tolist():
        pick = shard_of == s
        x, _ = store.read_shard(s)
        out[pick] = x[rows[pick] - (ends[s] - store.shard_rows[s])]
    return out


def doc_windows(doc: torch.Tensor, centre: list[int], before: int, after: int) -> list[list[int]]:
    """Per centre row: the rows of its document from ``before`` rows ahead to ``after`` past it."""
    n = doc.numel()
    out = []
    for r in centre:
        lo, hi = r, r
        while lo > 0 and r - lo < before and doc[lo - 1] == doc[r]:
            lo -= 1
        while hi < n - 1 and hi - r < after and doc[hi + 1] == doc[r]:
            hi += 1
        out.append(list(range(lo, hi + 1)))
    return out


def side_contexts(store: ActivationStore, sae, feature: int, rows: list[int], decode, *,
                  before: int = BEFORE, after: int = AFTER) -> list[Example]:
    """``feature``'s contexts at the given rows of ``store``, highest first as given; ``decode``
    turns a window's ids into one string per id (``models.tokens.display_tokens``)."""
    if not rows:
        return []
    doc, pos = store.row_keys()
    toks = store.token_ids()
    if max(rows) >= doc.numel():
        raise UniversalityError(f"row {max(rows)} is past the {doc.numel()} rows of {store.path}: the harvest "
                                "changed since the result was computed; rebuild the result")
    windows = doc_windows(doc, rows, before, after)
    flat = torch.tensor([r for w in windows for r in w])
    with torch.no_grad():
        acts = sae.encode(_read_rows(store, flat).to(sae.device))[:, feature].float().cpu()
    out, at = [], 0
    for r, w in zip(rows, windows):
        a = acts[at:at + len(w)].tolist()
        at += len(w)
        peak = w.index(r)
        out.append(Example(decode([int(toks[j]) for j in w]), a, peak, a[peak], int(doc[r]), int(pos[r])))
    return out


def pair_contexts(ws: Workspace, result, i: int, tokenizer, *, before: int = BEFORE,
                  after: int = AFTER) -> dict[str, list[Example]]:
    """Both features of matched pair ``i`` of a ``Universality`` result, in context (module doc)."""
    from sae_core.sae.io import load_sae

    r = result.results
    if "paired" not in r or any("rows_a" not in p for p in r["pairs"][:1]):
        raise UniversalityError(f"the result {result.path.name} was computed before pairs kept their rows; "
                                "build it again to see contexts")
    if not 0 <= i < len(r["pairs"]):
        raise UniversalityError(f"pair {i}: the result has {len(r['pairs'])} matched pairs (0..{len(r['pairs']) - 1})")
    art = ws.get("paired", r["paired"])
    if art is None:
        raise UniversalityError(f"the paired harvest {r['paired']} of this result is no longer in the workspace; "
                                "build the result again")
    pair = open_paired(ws, art)
    p = r["pairs"][i]

    def decode(ids: list[int]) -> list[str]:
        return display_tokens(tokenizer, ids)[0]
    out = {}
    for side, store in (("a", pair.a), ("b", pair.b)):
        sae_art = ws.get("sae", r["saes"][side])
        if sae_art is None:
            raise UniversalityError(f"SAE {r['saes'][side]} of this result is no longer in the workspace")
        out[side] = side_contexts(store, load_sae(sae_art.path), p[side], p[f"rows_{side}"], decode,
                                  before=before, after=after)
    return out
