"""Harvest activations at a hook over a corpus into a resumable sharded store.

Hot loop (per batch of ``batch_size`` texts): tokenize with ``to_tokens`` (one BOS per row, right
padded), cut rows to ``context_size``, run the model under ``inference_mode`` with one hook that
grabs the activation and raises to stop the forward pass right there, so no later layer, final
norm or unembed is ever computed (cheaper than ``stop_at_layer``, which cannot skip the unembed at
the last layer). Pad positions are always dropped; BOS and other special tokens too when
``exclude_special``. Rows go into a preallocated shard buffer, written atomically when full.

Resume: after each shard, ``progress.json`` records the shards written and the input position
(the first batch not fully stored, and how many of that batch's rows are already in shards).
Batches always start at multiples of ``batch_size``, so a resumed run recomputes exactly the same
batches and the store equals an uninterrupted one bit for bit.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from sae_core.activations.store import (
    META_FILE, PROGRESS_FILE, ActivationStore, StoreMeta, remove_shards_from,
    write_meta, write_shard)
from sae_core.errors import ArtifactError, SAECoreError
from sae_core.io import TORCH_DTYPES, atomic_write_json, read_json
from sae_core.models.hooks import capture_at_hook, hook_width
from sae_core.models.loading import check_hook, keep_mask_BT, load_model, to_tokens
from sae_core.models.texts import TextSource, TextSourceError, texts_for_tokens
from sae_core.workspace import Artifact, Workspace, artifact_name

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


def harvest_activations(model, hook: str, texts: list[str], out_dir: Path, *, model_name: str,
                        batch_size: int = 32, context_size: int = 64, shard_tokens: int = 65536,
                        exclude_special: bool = True, dtype: str = "float32", source: str = "",
                        on_progress: ProgressFn | None = None) -> ActivationStore:
    """Store the activations at ``hook`` for every kept token of ``texts`` in ``out_dir``.

    Calling it again with the same arguments resumes an interrupted run (or returns the finished
    store at once). ``on_progress(texts_done, n_texts)`` is called after every batch; if it
    raises, the harvest stops and can be resumed. Returns the complete ``ActivationStore``.
    """
    check_hook(model, hook)
    if dtype not in TORCH_DTYPES:
        raise SAECoreError(f"dtype {dtype!r} is not one of {sorted(TORCH_DTYPES)}")
    if batch_size <= 0 or context_size <= 1 or shard_tokens <= 0:
        raise SAECoreError(f"batch_size ({batch_size}) and shard_tokens ({shard_tokens}) must be "
                           f"positive and context_size ({context_size}) at least 2")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"model": model_name, "hook": hook, "batch_size": batch_size, "context_size": context_size,
              "shard_tokens": shard_tokens, "exclude_special": exclude_special, "dtype": dtype,
              "source": source, "n_texts": len(texts), "texts_sha256": _texts_digest(texts)}
    state = _load_progress(out_dir, config) or {"config": config, "shard_rows": [], "text_pos": 0,
                                                "row_skip": 0}
    d = hook_width(model, hook)  # per token: hook_z's heads flattened, mlp.hook_post is d_mlp
    meta = StoreMeta(model=model_name, hook=hook, d=d, dtype=dtype,
                     n_tokens=sum(state["shard_rows"]), context_size=context_size,
                     shard_tokens=shard_tokens, exclude_special=exclude_special, source=source,
                     complete=False)
    if state.get("complete"):
        return ActivationStore.open(out_dir)
    remove_shards_from(out_dir, len(state["shard_rows"]))

    tok = model.tokenizer
    special_ids = sorted(set(getattr(tok, "all_special_ids", []) or []))
    device = next(model.parameters()).device
    buf_acts_ND = torch.empty(shard_tokens, d, dtype=TORCH_DTYPES[dtype])
    buf_tok_N = torch.empty(shard_tokens, dtype=torch.int64)
    buf_key_2N = torch.empty(2, shard_tokens, dtype=torch.int64)  # (document, position) of each row
    filled = 0
    shard_rows: list[int] = list(state["shard_rows"])

    def commit(n_rows: int, text_pos: int, row_skip: int) -> None:
        # Shard first, then progress: a crash in between only redoes (and overwrites) that shard.
        write_shard(out_dir, len(shard_rows), buf_acts_ND[:n_rows], buf_tok_N[:n_rows], buf_key_2N[0, :n_rows],
                    buf_key_2N[1, :n_rows])
        shard_rows.append(n_rows)
        atomic_write_json(out_dir / PROGRESS_FILE, {"config": config, "shard_rows": shard_rows,
                                                    "text_pos": text_pos, "row_skip": row_skip})

    skip = state["row_skip"]
    with torch.inference_mode(), capture_at_hook(model, hook) as capture:
        for start in range(state["text_pos"], len(texts), batch_size):
            end = min(start + batch_size, len(texts))
            tokens_BT = to_tokens(model, texts[start:end])[:, :context_size].to(device)
            acts_BTD = capture(tokens_BT)
            mask_BT = keep_mask_BT(tokens_BT, tok.pad_token_id, special_ids, exclude_special)
            acts_ND, tok_N = acts_BTD[mask_BT], tokens_BT[mask_BT]
            B, T = tokens_BT.shape
            key_2N = torch.stack([torch.arange(start, start + B, device=device)[:, None].expand(B, T)[mask_BT],
                                  torch.arange(T, device=device)[None, :].expand(B, T)[mask_BT]]).cpu()
            used, skip = skip, 0  # rows of this batch already in shards (only on resume)
            while used < acts_ND.shape[0]:
                take = min(shard_tokens - filled, acts_ND.shape[0] - used)
                buf_acts_ND[filled:filled + take] = acts_ND[used:used + take]
                buf_tok_N[filled:filled + take] = tok_N[used:used + take]
                buf_key_2N[:, filled:filled + take] = key_2N[:, used:used + take]
                filled, used = filled + take, used + take
                if filled == shard_tokens:
                    batch_done = used == acts_ND.shape[0]
                    commit(filled, end if batch_done else start, 0 if batch_done else used)
                    filled = 0
            if on_progress is not None:
                on_progress(end, len(texts))
    if filled:
        commit(filled, len(texts), 0)
    meta = replace(meta, n_tokens=sum(shard_rows), complete=True)
    write_meta(out_dir, meta, shard_rows)
    atomic_write_json(out_dir / PROGRESS_FILE, {"config": config, "shard_rows": shard_rows,
                                                "text_pos": len(texts), "row_skip": 0, "complete": True})
    return ActivationStore.open(out_dir)


def harvest_to_workspace(ws: Workspace, model_name: str, hook: str, *, n_tokens: int, seed: int = 0,
                         context_size: int = 64, exclude_special: bool = True,
                         text: TextSource | None = None,
                         on_progress: ProgressFn | None = None, model=None) -> Artifact:
    """Harvest ~``n_tokens`` activations of ``text`` (default: the zoo corpus stream for ``seed``)
    into the workspace and register them; the artifact's meta records the text (``source``, and
    ``text_source`` to read it again, e.g. for the CE/KL of SAEs trained on it).

    Idempotent: an artifact with the same (model, hook, config) is returned without loading the
    model. An interrupted build resumes in place in ``ws.artifact_dir("activations", name)``.
    """
    text = text or TextSource()
    config = {"n_tokens": n_tokens, "seed": seed, "context_size": context_size,
              "exclude_special": exclude_special, "corpus": text.to_json() or "zoo-corpus",
              "dtype": "float32"}
    name = artifact_name(model_name, hook, config)
    existing = ws.get("activations", name)
    if existing is not None:
        return existing
    model = model if model is not None else load_model(model_name)
    check_hook(model, hook)
    texts = texts_for_tokens(model.tokenizer, n_tokens, text.documents(seed), context_size, exclude_special)
    if not texts:
        raise TextSourceError(f"{text.describe(seed)} holds no documents to harvest")
    out_dir = ws.artifact_dir("activations", name)
    store = harvest_activations(model, hook, texts, out_dir, model_name=model_name,
                                context_size=context_size, exclude_special=exclude_special,
                                source=text.describe(seed), on_progress=on_progress)
    meta = {"n_tokens": store.n_tokens, "n_tokens_requested": n_tokens, "d": store.d,
            "context_size": context_size, "seed": seed, "exclude_special": exclude_special,
            "dtype": store.meta.dtype, "source": store.meta.source, "n_texts": len(texts),
            "text_source": text.to_json()}
    return ws.adopt(out_dir, "activations", name, model=model_name, hook=hook, meta=meta)
