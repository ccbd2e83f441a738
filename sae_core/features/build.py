"""Build a feature index: one streaming pass of model + SAE over a corpus, then the weight-based parts.

Hot loop, per batch of ``batch_size`` sequences (``[B, T]`` tokens, one BOS each, right padded):
the model runs up to the hook and stops there (``capture_at_hook``); the SAE encodes the
activations at inference; padding and special tokens are zeroed (never counted); the nonzero codes
become coordinates ``(token, feature, value)`` and feed, without any ``[tokens, features]`` matrix
beyond the batch's own:

- counts (density = nonzero count / kept tokens) and the maximum;
- ``StreamingHistogram`` of nonzero activations;
- the top-activation ``ExampleBank`` (score = activation) and the uniform sample ``ExampleBank``
  (score = a hash key); each candidate carries the feature's activations on a window of
  ``before + 1 + after`` tokens of its own sequence, gathered from the batch's codes.

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

from sae_core.activations.harvest import capture_at_hook, keep_mask_BT
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


def _windows(z_BTS: torch.Tensor, b_M: torch.Tensor, t_M: torch.Tensor, f_M: torch.Tensor,
             before: int, after: int) -> torch.Tensor:
    """``[M, W]`` activations of feature f_M at positions t_M-before .. t_M+after of row b_M (0 outside)."""
    T, dev = z_BTS.shape[1], z_BTS.device
    pos_MW = t_M[:, None] + torch.arange(-before, after + 1)
    inside = (pos_MW >= 0) & (pos_MW < T)
    vals = z_BTS[b_M[:, None].to(dev), pos_MW.clamp(0, T - 1).to(dev), f_M[:, None].to(dev)].float().cpu()
    return torch.where(inside, vals, torch.zeros_like(vals))


def _offer(bank: ExampleBank, score_M, b_M, t_M, f_M, v_M, gidx_M, z_BTS, cfg: IndexConfig) -> None:
    take = score_M > bank.threshold(f_M)
    if bool(take.any()):
        b, t, f = b_M[take], t_M[take], f_M[take]
        bank.update(Candidates(f, score_M[take], v_M[take], gidx_M[take],
                               _windows(z_BTS, b, t, f, cfg.before, cfg.after)))


def _stream_batch(state: StreamState, z_BTS: torch.Tensor, seq0: int, cfg: IndexConfig) -> None:
    """Feed one batch's codes (on any device) to the accumulators (on the CPU: only the nonzero
    entries and the winners' windows leave the device)."""
    S = z_BTS.shape[2]
    b_M, t_M, f_M = z_BTS.nonzero(as_tuple=True)
    v_M = z_BTS[b_M, t_M, f_M].float().cpu()
    b_M, t_M, f_M = b_M.cpu(), t_M.cpu(), f_M.cpu()
    state.count_S += torch.bincount(f_M, minlength=S)
    state.max_S = state.max_S.scatter_reduce(0, f_M, v_M, "amax")
    state.hist.update(f_M, v_M)
    gidx_M = (seq0 + b_M) * cfg.context_size + t_M  # a batch may be narrower than the context
    _offer(state.top, v_M, b_M, t_M, f_M, v_M, gidx_M, z_BTS, cfg)
    _offer(state.sample, sample_keys(gidx_M, f_M, cfg.seed), b_M, t_M, f_M, v_M, gidx_M, z_BTS, cfg)


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
    device, model_device = sae.device, next(model.parameters()).device
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
            z_BTS = sae.encode(acts_BTD.to(device, sae.W_enc.dtype))
            z_BTS[~mask_BT.to(device)] = 0  # padding and specials never count
            B, T = tokens_BT.shape
            real_BT = keep_mask_BT(tokens_BT, tok.pad_token_id, [], False)  # not padding
            state.tokens_NT[s0:s0 + B, :T] = torch.where(real_BT, tokens_BT, -1).to(torch.int32)
            state.n_kept += int(mask_BT.sum())
            _stream_batch(state, z_BTS, s0, cfg)
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
