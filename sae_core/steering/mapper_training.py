"""Training mappers: from paired rows in memory, or streamed from a paired harvest with checkpoints.

- ``train_mapper(X, Y, cfg)``: rows of ``X`` and ``Y`` in memory (``mappers.paired_activations``);
  ``val_fraction`` of the rows, drawn at random, are held out for validation.
- ``train_mapper_streaming(pair, cfg, ckpt_dir=)``: the rows of a ``PairedStores`` (a paired
  harvest), read a shard group at a time by one seeded shuffle of both stores; the last
  ``val_fraction`` of the rows (the harvest's last documents) are held out. With ``ckpt_dir`` it
  writes a checkpoint every ``checkpoint_every`` steps and at each epoch's end (weights, AdamW
  moments, the best weights so far, the history), and a rerun resumes from it exactly: the same
  batches, the same result as an uninterrupted run.
Both: MSE summed over the width, AdamW (``cfg.lr``; the paper's 1e-4), ``epochs`` passes, the
weights of the best validation FVU kept, early stopping after ``patience`` epochs without gain.
``ridge`` is closed form: (X^T X + lambda I)^-1 X^T Y on centred data, from sums accumulated in
float64 (streamed: one pass over the training rows).
"""
from __future__ import annotations

import math
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from sae_core.errors import ArtifactError
from sae_core.io import atomic_write_json, load_tensors, read_json, save_tensors
from sae_core.training.checkpoint import flatten_opt, unflatten_opt
from sae_core.steering.interventions import InterventionError
from sae_core.steering.mappers import Endpoint, Mapper, MapperConfig

Pairs = Iterable[tuple[torch.Tensor, torch.Tensor]]
Progress = Callable[[int, int, str], None]
CKPT_META, CKPT_STATE = "meta.json", "state-{:08d}.safetensors"


def _check_finite(x: torch.Tensor, y: torch.Tensor) -> None:
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise InterventionError("the paired activations hold NaN or infinite values")


class _Stats:
    """Running float64 sums over (x, y) rows: enough for FVU of a prediction and for ridge."""

    def __init__(self):
        self.n, self.sse, self.sy, self.syy = 0, 0.0, None, 0.0

    def add_fvu(self, pred: torch.Tensor, y: torch.Tensor) -> None:
        y64 = y.double()
        self.n += y.shape[0]
        self.sse += float(((y64 - pred.double()) ** 2).sum())
        self.sy = y64.sum(0) if self.sy is None else self.sy + y64.sum(0)
        self.syy += float((y64 ** 2).sum())

    def fvu(self) -> float:
        sst = self.syy - float((self.sy ** 2).sum()) / max(1, self.n)
        return self.sse / max(sst, 1e-30)


@torch.no_grad()
def _val_fvu(m: Mapper, val: Pairs) -> float:
    m.eval()
    st = _Stats()
    for x, y in val:
        st.add_fvu(m(x), y)
    return st.fvu()


@torch.no_grad()
def _fit_ridge(m: Mapper, train: Pairs, lam: float) -> None:
    n, sx, sy, xtx, xty = 0, 0.0, 0.0, 0.0, 0.0
    for x, y in train:
        _check_finite(x, y)
        x, y = x.double(), y.double()
        n += x.shape[0]
        sx, sy = sx + x.sum(0), sy + y.sum(0)
        xtx, xty = xtx + x.T @ x, xty + x.T @ y
    mx, my = sx / n, sy / n
    gram = xtx - n * torch.outer(mx, mx)
    reg = lam * gram.diagonal().mean().clamp_min(1e-12)
    W = torch.linalg.solve(gram + reg * torch.eye(gram.shape[0], dtype=gram.dtype),
                           xty - n * torch.outer(mx, my))  # [d_src, d_tgt]
    m.lin.weight.copy_(W.T.float())
    m.lin.bias.copy_((my - mx @ W).float())


def _save_ckpt(d: Path, m: Mapper, opt, st: dict, best_state: dict | None, cfg_json: dict) -> None:
    d.mkdir(parents=True, exist_ok=True)
    opt_t, layout = flatten_opt(opt.state_dict())
    tensors = {f"m.{k}": v.detach().cpu() for k, v in m.state_dict().items()}
    tensors |= {f"best.{k}": v.cpu() for k, v in (best_state or {}).items()}
    tensors |= {k: v.detach().cpu() for k, v in opt_t.items()}
    name = CKPT_STATE.format(st["global_step"])
    save_tensors(d / name, tensors)
    atomic_write_json(d / CKPT_META, {**st, "state_file": name, "opt": layout, "config": cfg_json})
    for old in d.glob("state-*.safetensors"):  # the meta now points at the new file
        if old.name != name:
            old.unlink()


def _load_ckpt(d: Path, m: Mapper, opt, cfg_json: dict) -> tuple[dict, dict | None] | None:
    if not (d / CKPT_META).exists():
        return None
    meta = read_json(d / CKPT_META)
    if meta.get("config") != cfg_json:
        raise ArtifactError(f"{d} holds a checkpoint of another mapper run; delete it or choose another directory")
    tensors = load_tensors(d / meta["state_file"])
    m.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("m.")})
    opt.load_state_dict(unflatten_opt({k: v for k, v in tensors.items() if k.startswith("opt.")}, meta["opt"]))
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    st = {k: meta[k] for k in ("epoch", "step", "global_step", "total", "rows", "best", "stale", "history")}
    if st["best"] is None:  # no validation yet: strict JSON wrote the starting +inf as null
        st["best"] = math.inf
    return st, best


def _fit(m: Mapper, cfg: MapperConfig, train_epoch: Callable[[int, int], Pairs], steps_per_epoch: int,
         val: Callable[[], Pairs], *, ckpt_dir: Path | None = None, ckpt_config: dict | None = None,
         on_progress: Progress | None = None) -> Mapper:
    """The gradient loop shared by both ways of training (module doc)."""
    opt = torch.optim.AdamW(m.parameters(), lr=cfg.lr)
    st = {"epoch": 0, "step": 0, "global_step": 0, "total": 0.0, "rows": 0, "best": math.inf, "stale": 0,
          "history": []}
    best_state = None
    if ckpt_dir is not None and (got := _load_ckpt(ckpt_dir, m, opt, ckpt_config)) is not None:
        st, best_state = got
    total_steps = cfg.epochs * steps_per_epoch
    while st["epoch"] < cfg.epochs and st["stale"] < cfg.patience:
        m.train()
        for x, y in train_epoch(st["epoch"], st["step"]):
            _check_finite(x, y)
            loss = ((m(x) - y) ** 2).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            st["total"] += loss.item() * len(x)
            st["rows"] += len(x)
            st["step"] += 1
            st["global_step"] += 1
            if on_progress and st["step"] % 50 == 0:
                on_progress(st["epoch"] * steps_per_epoch + st["step"], total_steps,
                            f"epoch {st['epoch'] + 1}/{cfg.epochs}")
            if ckpt_dir is not None and st["step"] % cfg.checkpoint_every == 0 and st["step"] < steps_per_epoch:
                _save_ckpt(ckpt_dir, m, opt, st, best_state, ckpt_config)
        val_fvu = _val_fvu(m, val())
        st["history"].append({"epoch": st["epoch"] + 1, "train_mse": st["total"] / max(1, st["rows"]),
                              "val_fvu": val_fvu})
        if val_fvu < st["best"]:
            st["best"], st["stale"] = val_fvu, 0
            best_state = {k: v.detach().clone() for k, v in m.state_dict().items()}
        else:
            st["stale"] += 1
        st["epoch"], st["step"], st["total"], st["rows"] = st["epoch"] + 1, 0, 0.0, 0
        if ckpt_dir is not None:
            _save_ckpt(ckpt_dir, m, opt, st, best_state, ckpt_config)
    m.load_state_dict(best_state)
    m.history = st["history"]
    if on_progress:
        on_progress(1, 1, "done")
    return m.eval()


def train_mapper(X: torch.Tensor, Y: torch.Tensor, cfg: MapperConfig = MapperConfig(), *,
                 source: Endpoint = Endpoint("", ""), target: Endpoint = Endpoint("", ""),
                 on_progress: Progress | None = None) -> Mapper:
    """Fit a mapper from rows of ``X`` to the same rows of ``Y`` in memory (module doc)."""
    if X.shape[0] != Y.shape[0] or X.shape[0] < 10:
        raise InterventionError(f"paired rows: X has {X.shape[0]}, Y has {Y.shape[0]}; need the same "
                                "number, at least 10")
    _check_finite(X, Y)
    g = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(X.shape[0], generator=g)
    n_val = max(1, int(cfg.val_fraction * X.shape[0]))
    val, tr = perm[:n_val], perm[n_val:]
    torch.manual_seed(cfg.seed)
    m = Mapper(cfg.kind, X.shape[1], Y.shape[1], cfg.hidden, source, target)

    def val_pairs() -> Iterator:
        return ((X[val[s:s + 4096]], Y[val[s:s + 4096]]) for s in range(0, len(val), 4096))
    if cfg.kind == "ridge":
        _fit_ridge(m, [(X[tr], Y[tr])], cfg.ridge)
        m.history = [{"epoch": 0, "val_fvu": _val_fvu(m, val_pairs())}]
        return m.eval()
    steps = -(-len(tr) // cfg.batch_size)

    def train_epoch(epoch: int, start: int) -> Iterator:
        order = tr[torch.randperm(len(tr), generator=g)]  # epochs are drawn in order from one generator
        return ((X[idx], Y[idx]) for i in range(start, steps)
                if len(idx := order[i * cfg.batch_size:(i + 1) * cfg.batch_size]))
    return _fit(m, cfg, train_epoch, steps, val_pairs, on_progress=on_progress)


def train_mapper_streaming(pair, cfg: MapperConfig = MapperConfig(), *, source: Endpoint = Endpoint("", ""),
                           target: Endpoint = Endpoint("", ""), ckpt_dir: Path | None = None,
                           on_progress: Progress | None = None) -> Mapper:
    """Fit a mapper on a paired harvest (``sae_core.activations.paired.PairedStores``), streamed,
    checkpointed to ``ckpt_dir`` and resumed from it (module doc). The checkpoint is removed once
    the mapper is trained."""
    n = pair.n_tokens
    n_val = max(1, int(cfg.val_fraction * n))
    n_tr = n - n_val
    if n_tr < 10:
        raise InterventionError(f"the paired harvest has {n} rows; a mapper needs at least 10 to train on")
    torch.manual_seed(cfg.seed)
    m = Mapper(cfg.kind, pair.a.d, pair.b.d, cfg.hidden, source, target)
    bs = cfg.batch_size

    def val_pairs():
        return pair.batches(4096, rows=(n_tr, n), shuffle=False)
    if cfg.kind == "ridge":
        _fit_ridge(m, pair.batches(4096, rows=(0, n_tr), shuffle=False), cfg.ridge)
        m.history = [{"epoch": 0, "val_fvu": _val_fvu(m, val_pairs())}]
        return m.eval()

    def train_epoch(epoch: int, start: int):
        return pair.batches(bs, seed=cfg.seed * 100003 + epoch, rows=(0, n_tr), start=start)
    ckpt_config = {"mapper": asdict(cfg), "stores": [str(pair.a.path), str(pair.b.path)], "n": n}
    m = _fit(m, cfg, train_epoch, -(-n_tr // bs), val_pairs, ckpt_dir=Path(ckpt_dir) if ckpt_dir else None,
             ckpt_config=ckpt_config, on_progress=on_progress)
    if ckpt_dir is not None:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return m
