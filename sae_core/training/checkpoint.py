"""Trainer checkpoints that resume exactly: weights, optimizer, step, threshold, dead counters, RNG.

Each checkpoint is a directory ``step-XXXXXXXX`` holding ``state.safetensors`` (every tensor: SAE
state, optimizer moments, dead counters, RNG state) and ``meta.json`` (step, config, key layout),
written to a staging name and renamed into place. The two newest are kept, so a checkpoint that
turns out corrupt (truncated disk write, bad copy) is reported and the older one is used.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from sae_core.errors import ArtifactError
from sae_core.io import atomic_write_json, load_tensors, read_json, save_tensors

log = logging.getLogger(__name__)
KEEP = 2


@dataclass
class TrainState:
    step: int
    tokens_seen: int
    sae_state: dict[str, torch.Tensor]
    opt_state: dict
    tokens_since_fired: torch.Tensor
    rng_state: torch.Tensor
    scale: float


def flatten_opt(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, layout = {}, {"param_groups": opt_state["param_groups"], "state": {}}
    for pid, st in opt_state["state"].items():
        layout["state"][str(pid)] = {}
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"opt.{pid}.{key}"] = val
                layout["state"][str(pid)][key] = "tensor"
            else:
                layout["state"][str(pid)][key] = val
    return tensors, layout


def unflatten_opt(tensors: dict, layout: dict) -> dict:
    state = {}
    for pid, st in layout["state"].items():
        state[int(pid)] = {k: (tensors[f"opt.{pid}.{k}"] if v == "tensor" else v) for k, v in st.items()}
    return {"param_groups": layout["param_groups"], "state": state}


def save_checkpoint(ckpt_root: Path, st: TrainState, config: dict) -> Path:
    final = Path(ckpt_root) / f"step-{st.step:08d}"
    staging = Path(ckpt_root) / f".staging-{st.step:08d}"
    shutil.rmtree(staging, ignore_errors=True)
    opt_tensors, opt_layout = flatten_opt(st.opt_state)
    tensors = {f"sae.{k}": v.detach().cpu() for k, v in st.sae_state.items()}
    tensors.update({k: v.detach().cpu() for k, v in opt_tensors.items()})
    tensors["tokens_since_fired"] = st.tokens_since_fired.cpu()
    tensors["rng_state"] = st.rng_state
    save_tensors(staging / "state.safetensors", tensors)
    atomic_write_json(staging / "meta.json", {"step": st.step, "tokens_seen": st.tokens_seen,
                                               "scale": st.scale, "config": config, "opt": opt_layout})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    for old in sorted(Path(ckpt_root).glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_latest_checkpoint(ckpt_root: Path, config: dict, at_most: int | None = None) -> TrainState | None:
    """The newest readable checkpoint made with ``config`` (at step ``at_most`` or earlier, when
    given); corrupt ones are skipped with a warning."""
    candidates = sorted(Path(ckpt_root).glob("step-*"), reverse=True)
    if at_most is not None:
        candidates = [c for c in candidates if c.name[5:].isdigit() and int(c.name[5:]) <= at_most]
    errors = []
    for ckpt in candidates:
        try:
            meta = read_json(ckpt / "meta.json")
            tensors = load_tensors(ckpt / "state.safetensors")
        except ArtifactError as e:
            log.warning("checkpoint %s is unreadable (%s); trying an older one", ckpt, e)
            errors.append(str(e))
            continue
        if meta["config"] != config:
            raise ArtifactError(f"checkpoint {ckpt} was made with another configuration; use a new "
                                "output directory or delete its checkpoints to start over")
        sae_state = {k[4:]: v for k, v in tensors.items() if k.startswith("sae.")}
        opt_state = unflatten_opt({k: v for k, v in tensors.items() if k.startswith("opt.")}, meta["opt"])
        return TrainState(meta["step"], meta["tokens_seen"], sae_state, opt_state,
                          tensors["tokens_since_fired"], tensors["rng_state"], meta["scale"])
    if candidates:
        raise ArtifactError(f"every checkpoint under {ckpt_root} is corrupt ({'; '.join(errors)}); "
                            "delete the directory to train from scratch")
    return None
