"""The activations subsystem's jobs: harvests and imports into the workspace (artifact in,
artifact out), over the stores that ``harvest``, ``parallel`` and ``user_file`` write."""
from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

from sae_core.activations.harvest import ProgressFn, harvest_hooks
from sae_core.activations.limits import check_disk_room, check_token_count
from sae_core.activations.parallel import harvest_parallel
from sae_core.activations.store import SHARD_TOKENS
from sae_core.activations.user_file import import_activation_file
from sae_core.models.hooks import hook_width
from sae_core.models.loading import check_hook, load_model
from sae_core.models.texts import TextSource, TextSourceError, texts_for_tokens
from sae_core.workspace import Artifact, Workspace, artifact_name


def harvest_to_workspace(ws: Workspace, model_name: str, hook: str, **kw) -> Artifact:
    """Harvest ``n_tokens`` activations at ``hook`` into the workspace and register them
    (``harvest_hooks_to_workspace`` with one hook; the same keywords)."""
    return harvest_hooks_to_workspace(ws, model_name, [hook], **kw)[0]


def harvest_hooks_to_workspace(ws: Workspace, model_name: str, hooks: list[str], *, n_tokens: int, seed: int = 0,
                               context_size: int = 64, exclude_special: bool = True,
                               text: TextSource | None = None, shard_tokens: int = SHARD_TOKENS,
                               autocast: str | None = None,
                               on_progress: ProgressFn | None = None, model=None, dp=None) -> list[Artifact]:
    """Harvest ``n_tokens`` activations of ``text`` (default: the zoo corpus stream for ``seed``)
    at each of ``hooks`` into the workspace, one forward pass for all of them, and register one
    ``activations`` artifact per hook; each artifact's meta records the text (``source``, and
    ``text_source`` to read it again, e.g. for the CE/KL of SAEs trained on it).

    Idempotent: hooks whose artifact exists (same model, hook and config, however it was made)
    are returned without running the model, and the model is not loaded when all exist. An
    interrupted build resumes in place in ``ws.artifact_dir("activations", name)``.

    ``dp`` (``sae_core.distributed.DataParallel``): every rank calls this with its own model
    and harvests its share of the texts (``parallel.harvest_parallel``); rank 0 merges and
    registers, and every rank returns the artifacts.

    Each store holds exactly ``n_tokens`` rows (``limits``: MIN_TOKENS to MAX_TOKENS, and what the
    disk can hold), fewer only when the text runs out first.
    """
    check_token_count(n_tokens)
    text = text or TextSource()
    config = {"n_tokens": n_tokens, "seed": seed, "context_size": context_size,
              "exclude_special": exclude_special, "corpus": text.to_json() or "zoo-corpus",
              "dtype": "float32"} | ({"shard_tokens": shard_tokens} if shard_tokens != SHARD_TOKENS else {}) \
        | ({"autocast": autocast} if autocast else {})
    names = [artifact_name(model_name, hook, config) for hook in hooks]
    arts = {hook: ws.get("activations", name) for hook, name in zip(hooks, names)}
    todo = [(hook, name) for hook, name in zip(hooks, names) if arts[hook] is None]
    if todo:
        model = model if model is not None else load_model(model_name)
        for hook, _ in todo:
            check_hook(model, hook)
        check_disk_room(ws.root, n_tokens, [hook_width(model, hook) for hook, _ in todo])
        texts = texts_for_tokens(model.tokenizer, n_tokens, text.documents(seed), context_size, exclude_special)
        if not texts:
            raise TextSourceError(f"{text.describe(seed)} holds no documents to harvest")
        out_dirs = [ws.artifact_dir("activations", name) for _, name in todo]
        run = harvest_hooks if dp is None else partial(harvest_parallel, dp=dp)
        stores = run(model, [h for h, _ in todo], texts, out_dirs, model_name=model_name,
                     context_size=context_size, exclude_special=exclude_special,
                     source=text.describe(seed), on_progress=on_progress, shard_tokens=shard_tokens,
                     autocast=autocast, max_rows=n_tokens)
        if dp is not None and not dp.is_main:
            dp.barrier()  # rank 0 registers the merged stores
            return [ws.get("activations", name) for name in names]
        for (hook, name), out_dir, store in zip(todo, out_dirs, stores):
            meta = {"n_tokens": store.n_tokens, "n_tokens_requested": n_tokens, "d": store.d,
                    "context_size": context_size, "seed": seed, "exclude_special": exclude_special,
                    "dtype": store.meta.dtype, "source": store.meta.source, "n_texts": len(texts),
                    "text_source": text.to_json()}
            arts[hook] = ws.adopt(out_dir, "activations", name, model=model_name, hook=hook, meta=meta)
        if dp is not None:
            dp.barrier()
    return [arts[hook] for hook in hooks]


def import_to_workspace(ws, path: str | Path, *, hook: str = "user", model: str = "user-file",
                        d_expected: int | None = None, shard_tokens: int = SHARD_TOKENS):
    """Import a user's activation file as an ``activations`` artifact (named by the file's content
    and, when not the default, the rows per shard: data-parallel ranks read whole shards)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    fields = {"file_sha256": digest.hexdigest()} | ({"shard_tokens": shard_tokens} if shard_tokens != SHARD_TOKENS else {})
    name = artifact_name(model, hook, fields)
    if (existing := ws.get("activations", name)) is not None:
        return existing
    meta: dict = {}  # filled in below; the record is written when the block succeeds
    with ws.create("activations", name, model=model, hook=hook, meta=meta, overwrite=True) as d:
        store = import_activation_file(path, d, hook=hook, model=model, d_expected=d_expected,
                                       shard_tokens=shard_tokens)
        meta.update(n_tokens=store.n_tokens, d=store.d, source=str(Path(path).resolve()))
    return ws.get("activations", name)
