"""Build a feature index: one streaming pass of model + SAE over a corpus, then the weight-based parts.

Hot loop, per batch of ``batch_size`` sequences (``[B, T]`` tokens, one BOS each, right padded):
the model runs up to the hook and stops there (``capture_at_hook``); the SAE encodes the
activations at inference straight into coordinates ``(token, feature, value)`` of its nonzero codes
(``SAE.encode_coords``: no dense code matrix, the pre-activations go to one reused buffer);
padding and special tokens are dropped (never counted); the coordinates feed:

- counts (density = nonzero count / kept tokens) and the maximum;
- ``StreamingHistogram`` of nonzero activations;
- the top-activation ``ExampleBank`` (score = activation) and the uniform sample ``ExampleBank``
  (score = a hash key); each candidate carries the feature's activations on a window of
  ``before + 1 + after`` tokens of its own sequence, looked up in the batch's sorted coordinates.

Only entries that beat a bank's current last score are offered to it, so after the first batches
very few are. Every ``checkpoint_every`` batches the whole state goes to a safetensors checkpoint;
a build started again with the same config resumes after the last checkpoint and gives the same
index as an uninterrupted one.

Then, from the weights: logit effects and nearest features (``weights.py``), the feature map
(``feature_map.py``, optional), the "fires on" search table, and the files (see ``index.py``).
"""
from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from sae_core.models.hooks import capture_at_hook
from sae_core.models.loading import keep_mask_BT
from sae_core.errors import ArtifactError
from sae_core.features.config import FeatureIndexError, IndexConfig
from sae_core.features.streaming import Candidates, ExampleBank, StreamingHistogram, sample_keys
from sae_core.io import atomic_write_json, load_tensors, read_json, save_tensors
from sae_core.models.loading import to_tokens
from sae_core.sae.base import SAE

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
CHECKPOINT_STATE, CHECKPOINT_PROGRESS = "state.safetensors", "progress.json"


def sae_fingerprint(sae: SAE) -> str:
    """A hash of the SAE's weights (and threshold): an index knows which SAE it describes."""
    h = hashlib.sha256()
    for name, t in sorted(sae.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class StreamState:
    """Everything the streaming pass accumulates (and checkpoints)."""

    def __init__(self, cfg: IndexConfig, n_features: int, n_seqs: int):
        self.top = ExampleBank(n_features, cfg.n_top, cfg.window)
        self.sample = ExampleBank(n_features, cfg.n_samples, cfg.window)
        self.hist = StreamingHistogram(n_features, cfg.hist_bins)
        self.count_S = torch.zeros(n_features, dtype=torch.int64)
        self.max_S = torch.zeros(n_features)
        self.tokens_NT = torch.full((n_seqs, cfg.context_size), -1, dtype=torch.int32)
        self.n_kept = 0
        self.batches_done = 0

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**self.top.state("top"), **self.sample.state("sample"), **self.hist.state(),
                "count": self.count_S, "max": self.max_S, "tokens": self.tokens_NT,
                "n_kept": torch.tensor([self.n_kept]), "batches_done": torch.tensor([self.batches_done])}

    def load(self, t: dict[str, torch.Tensor]) -> None:
        self.top.load_state("top", t)
        self.sample.load_state("sample", t)
        self.hist.load_state(t)
        self.count_S, self.max_S, self.tokens_NT = t["count"].clone(), t["max"].clone(), t["tokens"].clone()
        self.n_kept, self.batches_done = int(t["n_kept"][0]), int(t["batches_done"][0])


class BatchCodes:
    """One batch's nonzero codes as coordinates, sorted by (token, feature): the dense
    ``[tokens, features]`` code matrix is never built. ``row_M`` is the token's flat index
    ``b * T + t`` in the ``[B, T]`` batch."""

    def __init__(self, row_M: torch.Tensor, f_M: torch.Tensor, v_M: torch.Tensor, T: int,
                 n_features: int):
        self.row_M, self.f_M, self.v_M, self.T, self.S = row_M, f_M, v_M, T, n_features
        self.key_M = row_M * n_features + f_M  # ascending: coordinates come in row-major order

    def windows(self, row_M: torch.Tensor, f_M: torch.Tensor, before: int, after: int) -> torch.Tensor:
        """``[M, W]`` activations of feature f_M at positions t-before .. t+after of the token's
        own sequence (0 outside it, and where the feature is silent)."""
        t_M = row_M % self.T
        off_W = torch.arange(-before, after + 1)
        pos_MW = t_M[:, None] + off_W
        inside = (pos_MW >= 0) & (pos_MW < self.T)
        key_MW = (row_M[:, None] + off_W) * self.S + f_M[:, None]
        # callers ask only about entries of this batch, so key_M is not empty
        at_MW = torch.searchsorted(self.key_M, key_MW).clamp_max(self.key_M.numel() - 1)
        found = inside & (self.key_M[at_MW] == key_MW)
        return torch.where(found, self.v_M[at_MW], torch.zeros(()))


def _offer(bank: ExampleBank, score_M, codes: BatchCodes, gidx_M, cfg: IndexConfig) -> None:
    take = score_M > bank.threshold(codes.f_M)
    if bool(take.any()):
        row, f = codes.row_M[take], codes.f_M[take]
        bank.update(Candidates(f, score_M[take], codes.v_M[take], gidx_M[take],
                               codes.windows(row, f, cfg.before, cfg.after)))


def _stream_batch(state: StreamState, codes: BatchCodes, seq0: int, cfg: IndexConfig) -> None:
    """Feed one batch's codes (on the CPU) to the accumulators."""
    f_M, v_M = codes.f_M, codes.v_M
    state.count_S += torch.bincount(f_M, minlength=codes.S)
    state.max_S = state.max_S.scatter_reduce(0, f_M, v_M, "amax")
    state.hist.update(f_M, v_M)
    b_M, t_M = codes.row_M // codes.T, codes.row_M % codes.T
    gidx_M = (seq0 + b_M) * cfg.context_size + t_M  # a batch may be narrower than the context
    _offer(state.top, v_M, codes, gidx_M, cfg)
    _offer(state.sample, sample_keys(gidx_M, f_M, cfg.seed), codes, gidx_M, cfg)


def encode_batch(sae: SAE, acts_BTD: torch.Tensor, keep_BT: torch.Tensor,
                 scratch: dict) -> BatchCodes:
    """Encode a batch at inference into ``BatchCodes`` on the CPU, tokens not in ``keep_BT``
    (padding, specials) dropped. Only the nonzero entries leave the SAE's device. ``scratch``
    keeps the pre-activation buffer between calls (one large allocation for the whole pass)."""
    B, T, D = acts_BTD.shape
    x_ND = acts_BTD.reshape(B * T, D).to(sae.device, sae.W_enc.dtype)
    buf = scratch.get("pre")
    if buf is None or buf.shape[0] < B * T:
        buf = scratch["pre"] = torch.empty(B * T, sae.cfg.d_sae, device=sae.device, dtype=sae.W_enc.dtype)
    rows_M, f_M, v_M = sae.encode_coords(x_ND, out=buf[:B * T])
    keep_M = keep_BT.reshape(-1).to(rows_M.device)[rows_M]
    return BatchCodes(rows_M[keep_M].cpu(), f_M[keep_M].cpu(), v_M[keep_M].float().cpu(), T,
                      sae.cfg.d_sae)


def stream_features(model, sae: SAE, hook: str, texts: list[str], cfg: IndexConfig,
                    ckpt_dir: Path | None = None, on_progress: ProgressFn | None = None) -> StreamState:
    """The streaming pass (module doc); resumes from ``ckpt_dir`` when it holds this same build."""
    n_seqs = len(texts)
    state = StreamState(cfg, sae.cfg.d_sae, n_seqs)
    fingerprint = {"config": asdict(cfg), "sae": sae_fingerprint(sae), "hook": hook, "n_seqs": n_seqs}
    if ckpt_dir is not None and (ckpt_dir / CHECKPOINT_PROGRESS).exists():
        if read_json(ckpt_dir / CHECKPOINT_PROGRESS).get("fingerprint") == fingerprint:
            state.load(load_tensors(ckpt_dir / CHECKPOINT_STATE))
            log.info("resuming the index build after %d batches", state.batches_done)
    tok = model.tokenizer
    special = sorted(set(getattr(tok, "all_special_ids", []) or []))
    model_device = next(model.parameters()).device
    scratch: dict = {}
    sae.eval()
    n_batches = -(-n_seqs // cfg.batch_size)
    with torch.inference_mode(), capture_at_hook(model, hook) as capture:
        for bi in range(state.batches_done, n_batches):
            s0 = bi * cfg.batch_size
            tokens_BT = to_tokens(model, texts[s0:s0 + cfg.batch_size])[:, :cfg.context_size].cpu()
            acts_BTD = capture(tokens_BT.to(model_device))
            if acts_BTD.shape[-1] != sae.cfg.d_in:
                raise FeatureIndexError(
                    f"the SAE reads d_in={sae.cfg.d_in} but {hook} has width {acts_BTD.shape[-1]}; "
                    "choose the model and hook this SAE was trained on")
            mask_BT = keep_mask_BT(tokens_BT, tok.pad_token_id, special, cfg.exclude_special)
            codes = encode_batch(sae, acts_BTD, mask_BT, scratch)  # padding, specials never count
            B, T = tokens_BT.shape
            real_BT = keep_mask_BT(tokens_BT, tok.pad_token_id, [], False)  # not padding
            state.tokens_NT[s0:s0 + B, :T] = torch.where(real_BT, tokens_BT, -1).to(torch.int32)
            state.n_kept += int(mask_BT.sum())
            _stream_batch(state, codes, s0, cfg)
            state.batches_done = bi + 1
            if ckpt_dir is not None and (state.batches_done % cfg.checkpoint_every == 0):
                save_tensors(ckpt_dir / CHECKPOINT_STATE, state.tensors())
                atomic_write_json(ckpt_dir / CHECKPOINT_PROGRESS, {"fingerprint": fingerprint})
            if on_progress is not None:
                on_progress(min(s0 + B, n_seqs), n_seqs)
    if state.n_kept == 0:
        raise FeatureIndexError("no token was kept: the texts are empty or only special tokens")
    return state


def clear_checkpoint(ckpt_dir: Path) -> None:
    shutil.rmtree(ckpt_dir, ignore_errors=True)


def check_not_nan(sae: SAE) -> None:
    for name, p in sae.named_parameters():
        if not torch.isfinite(p).all():
            raise ArtifactError(f"the SAE's {name} holds NaN or Inf values; retrain or reload it")
