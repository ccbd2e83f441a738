"""Mappers from one model's activations at a hook to another's (arXiv 2503.04429, section 3).

- ``paired_activations``: both models read the same token rows (same tokenizer, checked), so
  row i of X and of Y is the same (document, position); padding and special tokens are dropped.
  ``TextActivations`` reads each model once for all the pairs a study takes from one text list.
- ``Mapper`` kinds:
  - ``autoencoder``: y = W2 relu(W1 x + b1) (+ b2), hidden width sqrt(d_src * d_tgt) by default
    (the paper's);
  - ``affine``: y = W x + b (the paper's baseline);
  - ``ridge``: the affine map in closed form, (X^T X + lambda I)^-1 X^T Y on centred data.
- training (``sae_core.steering.mapper_training``): in memory or streamed from a paired harvest,
  with a validation split, early stopping and checkpoints.
- ``fidelity``: on held-out text, the mapped activations against the target's own (MSE, cosine,
  FVU), and the target model's next-token KL and CE when its hook is replaced by them at every
  kept position, beside mean ablation (the target's mean activation) and zero ablation.

A mapper saves as ``mapper.safetensors`` plus ``mapper.json`` (kind, widths, both models and
hooks, its training history); applying it to another model or hook than it was trained for is
an error (``check_applies``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from sae_core.errors import ArtifactError
from sae_core.io import load_pair, save_pair
from sae_core.models.hooks import capture, per_token
from sae_core.models.loading import keep_mask_BT, to_tokens
from sae_core.models.tokenizer import same_tokenizer
from sae_core.steering.interventions import InterventionError

KINDS = ("autoencoder", "affine", "ridge")
WEIGHTS, META = "mapper.safetensors", "mapper.json"


@dataclass(frozen=True)
class MapperConfig:
    kind: str = field(default="autoencoder", metadata={"help": "autoencoder (the paper's), affine or ridge."})
    hidden: int | None = None      # autoencoder width; None: round(sqrt(d_src * d_tgt))
    lr: float = 1e-4
    epochs: int = 3
    batch_size: int = 256
    val_fraction: float = 0.1
    patience: int = 2
    ridge: float = 1e-3            # ``ridge`` only: lambda, relative to the mean of diag(X^T X)
    seed: int = 0
    checkpoint_every: int = 500    # steps between checkpoints of a streamed run (and every epoch's end)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InterventionError(f"mapper kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if not (0 < self.val_fraction < 1) or self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 \
                or self.checkpoint_every < 1:
            raise InterventionError(f"MapperConfig: need 0 < val_fraction < 1, epochs >= 1, batch_size >= 1, "
                                    f"lr > 0 and checkpoint_every >= 1 (got {self.val_fraction}, {self.epochs}, "
                                    f"{self.batch_size}, {self.lr}, {self.checkpoint_every})")


@dataclass(frozen=True)
class Endpoint:
    model: str
    hook: str


class Mapper(nn.Module):
    def __init__(self, kind: str, d_src: int, d_tgt: int, hidden: int | None = None,
                 source: Endpoint = Endpoint("", ""), target: Endpoint = Endpoint("", "")):
        super().__init__()
        self.kind, self.d_src, self.d_tgt = kind, d_src, d_tgt
        self.source, self.target = source, target
        self.history: list[dict] = []
        if kind == "autoencoder":
            self.hidden = hidden or max(1, round(math.sqrt(d_src * d_tgt)))
            self.enc, self.dec = nn.Linear(d_src, self.hidden), nn.Linear(self.hidden, d_tgt)
        else:
            self.hidden = None
            self.lin = nn.Linear(d_src, d_tgt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_src:
            raise InterventionError(f"the mapper reads width {self.d_src} ({self.source.model} "
                                    f"{self.source.hook}) but got width {x.shape[-1]}")
        p = next(self.parameters())
        y = x.to(p.device, p.dtype)
        y = self.dec(torch.relu(self.enc(y))) if self.kind == "autoencoder" else self.lin(y)
        return y.to(x.device, x.dtype)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check_applies(self, model_name: str, hook: str, side: str = "source") -> None:
        """Raise unless this mapper's ``side`` is ``model_name`` at ``hook``."""
        end = self.source if side == "source" else self.target
        if (end.model and end.model != model_name) or (end.hook and end.hook != hook):
            raise InterventionError(f"this mapper's {side} is {end.model} at {end.hook}, not "
                                    f"{model_name} at {hook}; use a mapper trained for it")

    def meta(self) -> dict:
        return {"kind": self.kind, "d_src": self.d_src, "d_tgt": self.d_tgt, "hidden": self.hidden,
                "source": asdict(self.source), "target": asdict(self.target),
                "n_params": self.n_params, "history": self.history}

    def save(self, out_dir: Path) -> Path:
        return save_pair(out_dir, WEIGHTS, self.state_dict(), META, self.meta())

    @classmethod
    def load(cls, path: Path) -> "Mapper":
        state, meta = load_pair(path, WEIGHTS, META, "a mapper")
        m = cls(meta["kind"], meta["d_src"], meta["d_tgt"], meta.get("hidden"),
                Endpoint(**meta["source"]), Endpoint(**meta["target"]))
        try:
            m.load_state_dict(state)
        except RuntimeError as e:
            raise ArtifactError(f"{Path(path) / WEIGHTS} does not fit {Path(path) / META}: {e}") from None
        m.history = meta.get("history", [])
        return m.eval()


class TextActivations:
    """Kept-token activations of models on one list of texts, each model read once for every hook
    asked of it (a study's mappers share their texts, so this halves its forward passes).

    ``need(model, hooks)`` declares hooks before the first read, so one pass reads them all;
    ``pair(model_a, hook_a, model_b, hook_b)`` is ``(X, Y)`` on the CPU, both models on the same
    kept token rows (same tokenizer, checked). Rows are kept until ``forget``."""

    def __init__(self, texts: list[str], *, context_size: int = 64, batch_size: int = 32):
        self.texts, self.context_size, self.batch_size = texts, context_size, batch_size
        self._wanted: dict[int, set[str]] = {}
        self._got: dict[tuple[int, str], torch.Tensor] = {}

    def need(self, model, hooks: list[str]) -> "TextActivations":
        self._wanted.setdefault(id(model), set()).update(hooks)
        return self

    def get(self, model, hook: str) -> torch.Tensor:
        if (id(model), hook) not in self._got:
            self._read(model, sorted(self._wanted.get(id(model), set()) | {hook}))
        return self._got[id(model), hook]

    def pair(self, model_a, hook_a: str, model_b, hook_b: str) -> tuple[torch.Tensor, torch.Tensor]:
        same_tokenizer(model_a.tokenizer, model_b.tokenizer, InterventionError)
        self.need(model_a, [hook_a]).need(model_b, [hook_b])
        return self.get(model_a, hook_a), self.get(model_b, hook_b)

    def forget(self, model) -> None:
        self._got = {k: v for k, v in self._got.items() if k[0] != id(model)}

    @torch.no_grad()
    def _read(self, model, hooks: list[str]) -> None:
        tok = model.tokenizer
        special = sorted(set(getattr(tok, "all_special_ids", []) or []))
        device = next(model.parameters()).device
        rows: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
        for s in range(0, len(self.texts), self.batch_size):
            ids = to_tokens(model, self.texts[s:s + self.batch_size])[:, :self.context_size]
            keep = keep_mask_BT(ids, tok.pad_token_id, special, True)
            got = capture(model, ids.to(device), hooks)
            for h in hooks:
                acts = per_token(h, got[h], ids)
                rows[h].append(acts[keep.to(acts.device)].float().cpu())
        self._got.update({(id(model), h): torch.cat(r) for h, r in rows.items()})


def paired_activations(model_a, hook_a: str, model_b, hook_b: str, texts: list[str], *,
                       context_size: int = 64, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X [N, d_a], Y [N, d_b])`` on the CPU: both models on the same kept token rows
    (``TextActivations`` for several pairs on the same texts)."""
    return TextActivations(texts, context_size=context_size, batch_size=batch_size).pair(
        model_a, hook_a, model_b, hook_b)


def _fvu(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float(((y - pred) ** 2).sum() / ((y - y.mean(0)) ** 2).sum().clamp_min(1e-30))


@dataclass(frozen=True)
class Fidelity:
    mse: float
    cosine: float
    fvu: float
    kl_mapped: float
    kl_mean_ablation: float
    kl_zero_ablation: float
    ce_clean: float
    ce_mapped: float
    ce_mean_ablation: float
    n_tokens: int
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


@torch.no_grad()
def fidelity(mapper: Mapper, model_a, hook_a: str, model_b, hook_b: str, texts: list[str], *,
             context_size: int = 64, batch_size: int = 32) -> Fidelity:
    """How well ``mapper`` stands in for B's own activations at ``hook_b`` (module doc)."""
    X, Y = paired_activations(model_a, hook_a, model_b, hook_b, texts, context_size=context_size,
                              batch_size=batch_size)
    pred = torch.cat([mapper(X[s:s + 4096]) for s in range(0, len(X), 4096)])
    mse = float(((pred - Y) ** 2).mean())
    cos = float(torch.nn.functional.cosine_similarity(pred, Y, dim=-1).mean())
    mean_D = Y.mean(0)
    tok = model_a.tokenizer
    special = sorted(set(getattr(tok, "all_special_ids", []) or []))
    sums = dict(kl_mapped=0.0, kl_mean=0.0, kl_zero=0.0, ce_clean=0.0, ce_mapped=0.0, ce_mean=0.0)
    n, row = 0, 0
    dev_b = next(model_b.parameters()).device
    for s in range(0, len(texts), batch_size):
        ids = to_tokens(model_a, texts[s:s + batch_size])[:, :context_size]
        keep = keep_mask_BT(ids, tok.pad_token_id, special, True).to(dev_b)
        n_keep = int(keep.sum())
        # this batch's kept rows of ``pred`` (paired_activations keeps them in this order)
        mapped = pred.new_zeros(*ids.shape, pred.shape[1])
        mapped[keep.cpu()] = pred[row:row + n_keep]
        ids = ids.to(dev_b)
        target_ok = keep_mask_BT(ids, tok.pad_token_id, [], False)[:, 1:]

        def run(fill):
            def fn(h, hook=None):
                return torch.where(keep.view(*keep.shape, *[1] * (h.ndim - 2)),
                                   fill(h).reshape(h.shape).to(h.dtype), h)
            with model_b.hooks(fwd_hooks=[(hook_b, fn)]):
                return torch.log_softmax(model_b(ids)[:, :-1].double(), -1)
        clean = torch.log_softmax(model_b(ids)[:, :-1].double(), -1)
        outs = {"mapped": run(lambda h: mapped.to(h.device)),
                "mean": run(lambda h: mean_D.to(h.device, h.dtype).expand(*h.shape[:2], -1)),
                "zero": run(torch.zeros_like)}
        gold = ids[:, 1:, None]
        for name, logp in outs.items():
            sums[f"kl_{name}"] += float((clean.exp() * (clean - logp)).sum(-1)[target_ok].sum())
        sums["ce_clean"] += float(-clean.gather(-1, gold).squeeze(-1)[target_ok].sum())
        sums["ce_mapped"] += float(-outs["mapped"].gather(-1, gold).squeeze(-1)[target_ok].sum())
        sums["ce_mean"] += float(-outs["mean"].gather(-1, gold).squeeze(-1)[target_ok].sum())
        n += int(target_ok.sum())
        row += n_keep
    k = {key: v / max(1, n) for key, v in sums.items()}
    return Fidelity(mse=mse, cosine=cos, fvu=_fvu(pred, Y), kl_mapped=k["kl_mapped"],
                    kl_mean_ablation=k["kl_mean"], kl_zero_ablation=k["kl_zero"], ce_clean=k["ce_clean"],
                    ce_mapped=k["ce_mapped"], ce_mean_ablation=k["ce_mean"], n_tokens=row)
