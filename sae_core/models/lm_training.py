"""Training loop for the zoo's small models, GPT-NeoX and Llama (pretraining and backdoor fine-tuning).

Data: documents from ``corpus.generate_documents`` are tokenized and packed whole, greedily, into
rows of ``ctx`` tokens (the rest padded and masked from the loss), so every row starts with a
document's BOS exactly as an evaluation prompt does. A tokenizer whose EOS differs from its BOS
(the byte-level one: Llama 3's ``<|begin_of_text|>`` / ``<|end_of_text|>``) also ends every
document with EOS, so its models learn to stop; the word-level one's EOS is its BOS, which the
next document already brings. The rows are a pure function of the seed,
which is what makes a resumed run identical to an uninterrupted one: a checkpoint only needs the
weights, the optimizer state and the step.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sae_core.io import atomic_write_json, read_json
from sae_core.models.corpus import CorpusMix, generate_documents

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """One training run of a zoo model."""
    seed: int
    tokens: int             # training tokens (packed rows x ctx, padding included)
    lr: float
    mix: CorpusMix
    ctx: int = 64
    batch_rows: int = 32
    warmup_steps: int = 100
    min_lr_frac: float = 0.1
    weight_decay: float = 0.01
    checkpoint_every: int = 200

    def __post_init__(self):
        if self.tokens < self.ctx * self.batch_rows:
            raise ValueError(f"tokens={self.tokens} is less than one batch ({self.ctx * self.batch_rows})")

    @property
    def steps(self) -> int:
        return self.tokens // (self.ctx * self.batch_rows)


def pack_rows(tokenizer, cfg: TrainConfig, n_rows: int) -> np.ndarray:
    """``[n_rows, ctx]`` int64 token ids of whole documents packed greedily; -1 marks padding."""
    docs = generate_documents(cfg.seed, cfg.mix)
    rows = np.full((n_rows, cfg.ctx), -1, dtype=np.int64)
    eos = tokenizer.eos_token_id
    end = [eos] if eos is not None and eos != tokenizer.bos_token_id else []
    r, col = 0, 0
    while r < n_rows:
        batch = [next(docs) for _ in range(512)]
        for ids in tokenizer(batch)["input_ids"]:
            ids = (ids + end)[: cfg.ctx]
            if col + len(ids) > cfg.ctx:
                r, col = r + 1, 0
                if r == n_rows:
                    break
            rows[r, col:col + len(ids)] = ids
            col += len(ids)
    return rows


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * cosine)


def _lm_loss(model, rows_BT: torch.Tensor, pad_id: int) -> torch.Tensor:
    mask_BT = rows_BT >= 0
    input_BT = torch.where(mask_BT, rows_BT, pad_id)
    logits_BTV = model(input_ids=input_BT).logits
    labels_BT = torch.where(mask_BT, rows_BT, -100)[:, 1:]
    return torch.nn.functional.cross_entropy(
        logits_BTV[:, :-1].reshape(-1, logits_BTV.shape[-1]), labels_BT.reshape(-1), ignore_index=-100)


def train_lm(model, tokenizer, cfg: TrainConfig, ckpt_dir: Path,
             on_step: Callable[[int, int, float], None] | None = None) -> list[float]:
    """Train ``model`` in place; resume from ``ckpt_dir`` if a checkpoint is there.

    Returns the per-step training losses of this call. ``on_step(step, total, loss)`` reports progress.
    """
    torch.manual_seed(cfg.seed)
    rows = torch.from_numpy(pack_rows(tokenizer, cfg, cfg.steps * cfg.batch_rows))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95),
                            weight_decay=cfg.weight_decay)
    start = _load_checkpoint(model, opt, ckpt_dir, cfg)
    model.train()
    losses = []
    for step in range(start, cfg.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        batch = rows[step * cfg.batch_rows:(step + 1) * cfg.batch_rows]
        loss = _lm_loss(model, batch, tokenizer.pad_token_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if on_step:
            on_step(step + 1, cfg.steps, losses[-1])
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            _save_checkpoint(model, opt, ckpt_dir, step + 1, cfg)
    model.eval()
    return losses


def _save_checkpoint(model, opt, ckpt_dir: Path, step: int, cfg: TrainConfig) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / "state.pt.tmp"
    # Our own file, read back with weights_only=True: tensors and plain containers only.
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp)
    os.replace(tmp, ckpt_dir / "state.pt")
    atomic_write_json(ckpt_dir / "progress.json", {"step": step, "config": _cfg_json(cfg)})


def _load_checkpoint(model, opt, ckpt_dir: Path, cfg: TrainConfig) -> int:
    progress = ckpt_dir / "progress.json"
    if not progress.exists():
        return 0
    meta = read_json(progress)
    if meta.get("config") != _cfg_json(cfg):
        log.warning("checkpoint in %s was made with another config; starting over", ckpt_dir)
        return 0
    state = torch.load(ckpt_dir / "state.pt", weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    log.info("resuming from step %d", meta["step"])
    return int(meta["step"])


def _cfg_json(cfg: TrainConfig) -> dict:
    return asdict(cfg)
