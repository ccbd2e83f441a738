"""Feature indexes end to end: build one for an SAE (streaming pass, weights, map, files) and keep
it in the workspace as a ``feature_index`` artifact. The CLI (``sae-core index``), the demo and the
app all call ``index_to_workspace``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from sae_core.features.build import check_not_nan, clear_checkpoint, sae_fingerprint, stream_features
from sae_core.features.config import FeatureIndexError, IndexConfig
from sae_core.features.index import FeatureIndex, write_index
from sae_core.features.weights import logit_effects, nearest_features
from sae_core.models.texts import TextSource, texts_for_tokens
from sae_core.models.tokens import vocab_table
from sae_core.models.unembed import FOLDED, unembed_through_final_norm
from sae_core.sae.base import SAE
from sae_core.workspace import Artifact, Workspace, artifact_name

KIND = "feature_index"
StageFn = Callable[[str], None]


def build_feature_index(model, sae: SAE, hook: str, texts: list[str], out_dir: Path,
                        cfg: IndexConfig, *, meta: dict | None = None, ckpt_dir: Path | None = None,
                        on_progress: Callable[[int, int], None] | None = None,
                        on_stage: StageFn | None = None) -> FeatureIndex:
    """Write a complete index of ``sae`` at ``hook`` over ``texts`` to ``out_dir`` (module doc)."""
    stage = on_stage or (lambda name: None)
    check_not_nan(sae)
    if not texts:
        raise FeatureIndexError("no texts to index: give at least one document")
    started = time.time()
    stage("streaming the corpus through the model and the SAE")
    state = stream_features(model, sae, hook, texts, cfg, ckpt_dir=ckpt_dir, on_progress=on_progress)
    stage("logit effects and nearest features")
    effects = logit_effects(sae.W_dec, unembed_through_final_norm(model), cfg.n_logits,
                            cfg.logit_hist_bins, cfg.n_promoters)
    nearest = nearest_features(sae.W_dec, cfg.n_nearest)
    map_xy = None
    if cfg.feature_map:
        from sae_core.features.feature_map import feature_map

        stage("feature map (UMAP of decoder rows)")
        map_xy = feature_map(sae.W_dec, seed=cfg.seed)
    stage("writing the index")
    # each id's text, and what shows byte-level tokens as text (``models.tokens``)
    vocab, token_bytes, spaced = vocab_table(model.tokenizer, int(model.W_U.shape[1]))
    info = {"sae_fingerprint": sae_fingerprint(sae), "hook": hook, "d_in": sae.cfg.d_in,
            "arch": sae.cfg.arch, "logit_basis": FOLDED, "tokens_spaced": spaced,
            "token_bytes": {str(i): h for i, h in token_bytes.items()},
            "build_seconds": round(time.time() - started, 2), **(meta or {})}
    write_index(out_dir, state, effects, nearest, map_xy, cfg, info, vocab)
    if ckpt_dir is not None:
        clear_checkpoint(ckpt_dir)
    return FeatureIndex.open(out_dir)


def index_name(model_name: str, hook: str, fingerprint: str, cfg: IndexConfig,
               text: TextSource | None = None) -> str:
    fields = {"sae": fingerprint, "index": cfg.result_fields(), "logit_basis": FOLDED}
    if text is not None and not text.is_zoo:
        fields["text"] = text.to_json()
    return artifact_name(model_name, hook, fields)


def find_indexes(ws: Workspace, fingerprint: str) -> list[Artifact]:
    """Indexes in the workspace built for the SAE with this fingerprint, newest first."""
    return [a for a in ws.list(KIND) if a.meta.get("sae_fingerprint") == fingerprint]


def index_to_workspace(ws: Workspace, sae: SAE, model_name: str, hook: str, cfg: IndexConfig, *,
                       sae_source: str = "", model=None, text: TextSource | None = None,
                       on_progress: Callable[[int, int], None] | None = None,
                       on_stage: StageFn | None = None) -> Artifact:
    """Build (or find) the index of ``sae`` at ``model_name``/``hook`` with ``cfg`` over ``text``
    (default: the zoo corpus stream ``cfg.corpus_seed``); resumable."""
    from sae_core.models.loading import check_hook, load_model

    text = text or TextSource()
    fingerprint = sae_fingerprint(sae)
    name = index_name(model_name, hook, fingerprint, cfg, text)
    if (existing := ws.get(KIND, name)) is not None:
        return existing
    model = model if model is not None else load_model(model_name)
    check_hook(model, hook)
    texts = texts_for_tokens(model.tokenizer, cfg.n_tokens, text.documents(cfg.corpus_seed),
                             cfg.context_size, cfg.exclude_special)
    if not texts:
        raise FeatureIndexError(f"{text.describe(cfg.corpus_seed)} holds no documents to index")
    meta = {"sae": sae_source, "sae_fingerprint": fingerprint, "d_sae": sae.cfg.d_sae,
            "n_tokens_requested": cfg.n_tokens, "model_name": model_name,
            "text_source": text.describe(cfg.corpus_seed)}
    with ws.create(KIND, name, model=model_name, hook=hook, meta=meta, overwrite=True) as d:
        index = build_feature_index(model, sae, hook, texts, d, cfg, meta=meta,
                                    ckpt_dir=ws.checkpoint_dir(name),
                                    on_progress=on_progress, on_stage=on_stage)
        meta["n_tokens"] = index.info["n_tokens"]
    return ws.get(KIND, name)
