"""Harvest activations at one hook, or several in one pass, over a corpus into resumable sharded stores.

Hot loop (per batch of ``batch_size`` texts): tokenize with ``to_tokens`` (one BOS per row, right
padded), cut rows to ``context_size``, run the model under ``inference_mode`` with one hook that
grabs the activation and raises to stop the forward pass right there, so no later layer, final
norm or unembed is ever computed (cheaper than ``stop_at_layer``, which cannot skip the unembed at
the last layer). Pad positions are always dropped; BOS and other special tokens too when
``exclude_special``. Rows go into a preallocated shard buffer, written atomically when full.
Several hooks (``harvest_hooks``) share one forward pass per batch (``hooks.capture``, stopped
after the last of them) and fill one store each, with the same rows.

Resume: after each shard, ``progress.json`` records the shards written and the input position
(the first batch not fully stored, and how many of that batch's rows are already in shards).
Batches always start at multiples of ``batch_size``, so a resumed run recomputes exactly the same
batches and the store equals an uninterrupted one bit for bit.
"""
from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from sae_core.activations.store import (
    META_FILE, PROGRESS_FILE, SHARD_TOKENS, ActivationStore, StoreMeta, remove_shards_from,
    write_meta, write_shard)
from sae_core.errors import ArtifactError, SAECoreError
from sae_core.io import TORCH_DTYPES, atomic_write_json, read_json
from sae_core.models.hooks import capture, capture_at_hook, hook_width, per_token
from sae_core.models.loading import check_hook, keep_mask_BT, to_tokens

ProgressFn = Callable[[int, int], None]


def _texts_digest(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _load_progress(out_dir: Path, config: dict) -> dict | None:
    """The saved resume state if ``out_dir`` holds this same harvest; raise if it holds another."""
    if not (out_dir / PROGRESS_FILE).exists():
        if (out_dir / META_FILE).exists() or any(out_dir.glob("shard_*.safetensors")):
            raise ArtifactError(f"{out_dir} already holds activations not made by this harvest; "
                                "choose another out_dir or delete it")
        return None
    state = read_json(out_dir / PROGRESS_FILE)
    old = state.get("config", {}) if isinstance(state, dict) else {}
    if old != config:
        diff = sorted(k for k in config.keys() | old.keys() if old.get(k) != config.get(k))
        raise ArtifactError(f"{out_dir} holds a harvest with a different config (differs in: "
                            f"{', '.join(diff)}); choose another out_dir or delete it")
    return state


class _Writer:
    """One store of a harvest: its shard buffer, resume state and atomic commits."""

    def __init__(self, out_dir: Path, config: dict, meta: StoreMeta, shard_tokens: int, dtype: str,
                 pin: bool = False):
        self.out_dir, self.config, self.meta = out_dir, config, meta
        # pinned (page-locked) when the model is on a GPU: its rows come over by DMA
        self.acts_ND = torch.empty(shard_tokens, meta.d, dtype=TORCH_DTYPES[dtype], pin_memory=pin)
        self.shard_rows: list[int] = []

    def start_from(self, shard_rows: list[int]) -> None:
        self.shard_rows = list(shard_rows)
        remove_shards_from(self.out_dir, len(self.shard_rows))

    def commit(self, n_rows: int, tok_N, key_2N, text_pos: int, row_skip: int) -> None:
        # Shard first, then progress: a crash in between only redoes (and overwrites) that shard.
        write_shard(self.out_dir, len(self.shard_rows), self.acts_ND[:n_rows], tok_N[:n_rows], key_2N[0, :n_rows],
                    key_2N[1, :n_rows])
        self.shard_rows.append(n_rows)
        atomic_write_json(self.out_dir / PROGRESS_FILE, {"config": self.config, "shard_rows": self.shard_rows,
                                                         "text_pos": text_pos, "row_skip": row_skip})

    def finish(self, n_texts: int) -> ActivationStore:
        write_meta(self.out_dir, replace(self.meta, n_tokens=sum(self.shard_rows), complete=True), self.shard_rows)
        atomic_write_json(self.out_dir / PROGRESS_FILE, {"config": self.config, "shard_rows": self.shard_rows,
                                                         "text_pos": n_texts, "row_skip": 0, "complete": True})
        return ActivationStore.open(self.out_dir)


def harvest_activations(model, hook: str, texts: list[str], out_dir: Path, **kw) -> ActivationStore:
    """Store the activations at ``hook`` for every kept token of ``texts`` in ``out_dir``
    (``harvest_hooks`` with one hook; the same keywords)."""
    return harvest_hooks(model, [hook], texts, [out_dir], **kw)[0]


def harvest_hooks(model, hooks: list[str], texts: list[str], out_dirs: list[Path], *, model_name: str,
                  batch_size: int = 32, context_size: int = 64, shard_tokens: int = SHARD_TOKENS,
                  exclude_special: bool = True, dtype: str = "float32", source: str = "",
                  on_progress: ProgressFn | None = None, doc_offset: int = 0,
                  autocast: str | None = None, max_rows: int | None = None) -> list[ActivationStore]:
    """Store the activations at each of ``hooks`` for every kept token of ``texts``, hook i into
    ``out_dirs[i]``, from one forward pass per batch (one hook: stopped right at it; several:
    stopped once the last has fired). The stores have the same rows, so they pair.

    Calling it again with the same arguments resumes an interrupted run (or returns the finished
    stores at once); the stores move in lockstep, and a resume starts every unfinished store from
    the one that got least far. ``on_progress(texts_done, n_texts)`` is called after every batch;
    if it raises, the harvest stops and can be resumed. ``doc_offset``: the index of ``texts[0]``
    in a longer list (the row keys' documents count from it; ``parallel``'s ranks).
    ``autocast="bf16"``: the model's forward under bfloat16 autocast (rows stored in ``dtype``).
    ``max_rows``: store the first ``max_rows`` kept tokens and stop (the texts cover at least the
    requested count, ``texts_for_tokens``, but their last document runs past it).
    """
    if autocast not in (None, "bf16"):
        raise SAECoreError(f"autocast={autocast!r}; choose 'bf16' or leave it unset (the model's own dtype)")
    if len(hooks) != len(out_dirs) or not hooks or len(set(hooks)) != len(hooks):
        raise SAECoreError(f"give one out_dir per hook, each hook once (got {len(hooks)} hooks, {len(out_dirs)} "
                           "directories)")
    for hook in hooks:
        check_hook(model, hook)
    if dtype not in TORCH_DTYPES:
        raise SAECoreError(f"dtype {dtype!r} is not one of {sorted(TORCH_DTYPES)}")
    if max_rows is not None and max_rows <= 0:
        raise SAECoreError(f"max_rows={max_rows}; give a positive number of rows, or None for every kept token")
    if batch_size <= 0 or context_size <= 1 or shard_tokens <= 0:
        raise SAECoreError(f"batch_size ({batch_size}) and shard_tokens ({shard_tokens}) must be "
                           f"positive and context_size ({context_size}) at least 2")
    common = {"model": model_name, "batch_size": batch_size, "context_size": context_size,
              "shard_tokens": shard_tokens, "exclude_special": exclude_special, "dtype": dtype,
              "source": source, "n_texts": len(texts), "texts_sha256": _texts_digest(texts)} \
        | ({"doc_offset": doc_offset} if doc_offset else {}) | ({"autocast": autocast} if autocast else {}) \
        | ({"max_rows": max_rows} if max_rows is not None else {})
    done: dict[int, ActivationStore] = {}
    writers: dict[int, _Writer] = {}
    states = []
    for i, (hook, out_dir) in enumerate(zip(hooks, map(Path, out_dirs))):
        out_dir.mkdir(parents=True, exist_ok=True)
        config = {**common, "hook": hook}
        state = _load_progress(out_dir, config) or {"shard_rows": [], "text_pos": 0, "row_skip": 0}
        if state.get("complete"):
            done[i] = ActivationStore.open(out_dir)
            continue
        d = hook_width(model, hook)  # per token: hook_z's heads flattened, mlp.hook_post is d_mlp
        meta = StoreMeta(model=model_name, hook=hook, d=d, dtype=dtype, n_tokens=0, context_size=context_size,
                         shard_tokens=shard_tokens, exclude_special=exclude_special, source=source, complete=False)
        writers[i] = _Writer(out_dir, config, meta, shard_tokens, dtype,
                             pin=next(model.parameters()).device.type == "cuda")
        states.append(state)
    if writers:
        first = min(states, key=lambda st: len(st["shard_rows"]))  # the store that got least far
        for w in writers.values():
            w.start_from(first["shard_rows"])
        _run(model, [hooks[i] for i in writers], list(writers.values()), texts, first, batch_size=batch_size,
             context_size=context_size, shard_tokens=shard_tokens, exclude_special=exclude_special,
             on_progress=on_progress, doc_offset=doc_offset, autocast=autocast, max_rows=max_rows)
        done.update({i: w.finish(len(texts)) for i, w in writers.items()})
    return [done[i] for i in range(len(hooks))]


def _run(model, hooks: list[str], writers: list[_Writer], texts: list[str], state: dict, *, batch_size: int,
         context_size: int, shard_tokens: int, exclude_special: bool, on_progress: ProgressFn | None,
         doc_offset: int = 0, autocast: str | None = None, max_rows: int | None = None) -> None:
    """The hot loop: batches from ``state``'s position, every hook's rows into its writer, until
    the texts end or ``max_rows`` rows are stored."""
    tok = model.tokenizer
    special_ids = sorted(set(getattr(tok, "all_special_ids", []) or []))
    device = next(model.parameters()).device
    buf_tok_N = torch.empty(shard_tokens, dtype=torch.int64)
    buf_key_2N = torch.empty(2, shard_tokens, dtype=torch.int64)  # (document, position) of each row
    filled = 0
    skip = state["row_skip"]
    left = None if max_rows is None else max_rows - sum(state["shard_rows"])  # rows still to store
    one = capture_at_hook(model, hooks[0]) if len(hooks) == 1 else nullcontext(None)
    with torch.inference_mode(), one as capture_one, \
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast == "bf16"):
        for start in range(state["text_pos"], len(texts), batch_size):
            if left is not None and left <= 0:
                break
            end = min(start + batch_size, len(texts))
            tokens_BT = to_tokens(model, texts[start:end])[:, :context_size].to(device)
            if capture_one is not None:
                acts = [capture_one(tokens_BT)]
            else:
                got = capture(model, tokens_BT, hooks)
                acts = [per_token(h, got[h], tokens_BT) for h in hooks]
            mask_BT = keep_mask_BT(tokens_BT, tok.pad_token_id, special_ids, exclude_special)
            acts_ND = [a[mask_BT] for a in acts]
            tok_N = tokens_BT[mask_BT]
            B, T = tokens_BT.shape
            docs_B = torch.arange(doc_offset + start, doc_offset + start + B, device=device)
            key_2N = torch.stack([docs_B[:, None].expand(B, T)[mask_BT],
                                  torch.arange(T, device=device)[None, :].expand(B, T)[mask_BT]]).cpu()
            used, skip = skip, 0  # rows of this batch already in shards (only on resume)
            n_rows = tok_N.shape[0] if left is None else min(tok_N.shape[0], used + left)
            if left is not None:
                left -= n_rows - used
            while used < n_rows:
                take = min(shard_tokens - filled, n_rows - used)
                for w, a in zip(writers, acts_ND):
                    w.acts_ND[filled:filled + take] = a[used:used + take]
                buf_tok_N[filled:filled + take] = tok_N[used:used + take]
                buf_key_2N[:, filled:filled + take] = key_2N[:, used:used + take]
                filled, used = filled + take, used + take
                if filled == shard_tokens:
                    batch_done = used == n_rows
                    for w in writers:
                        w.commit(filled, buf_tok_N, buf_key_2N, end if batch_done else start,
                                 0 if batch_done else used)
                    filled = 0
            if on_progress is not None:
                on_progress(end, len(texts))
    if filled:
        for w in writers:
            w.commit(filled, buf_tok_N, buf_key_2N, len(texts), 0)
