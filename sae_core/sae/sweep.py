"""The l-sweep: one Sampled-SAE per (l, scoring rule), plus BatchTopK and TopK references.

Every SAE of a sweep trains on the same activations (read from disk once and held in memory when
they fit the memory budget, else streamed: ``sae_core.sae.data``), with the same seed and batches,
so differences between rows come from the architecture alone. The sweep artifact holds ``table.json`` / ``table.csv`` (one row per SAE:
its settings, metrics and the name of its ``sae`` artifact).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import pandas as pd

from sae_core.activations import ActivationStore
from sae_core.errors import SAECoreError
from sae_core.io import atomic_write_bytes, atomic_write_json, read_json
from sae_core.sae.config import SAEConfig
from sae_core.sae.data import open_split
from sae_core.sae.runs import train_to_workspace
from sae_core.sae.training import StepLog, TrainerConfig
from sae_core.workspace import Artifact, Workspace, artifact_name

REFERENCE_ARCHS = ("batchtopk", "topk")


@dataclass(frozen=True)
class SweepConfig:
    k: int
    d_sae: int
    ls: tuple[float, ...]
    scorings: tuple[str, ...] = ("l2", "entropy")
    pool_rule: str = "top"
    references: tuple[str, ...] = REFERENCE_ARCHS
    tokens: int = 500_000
    batch_size: int = 1024
    lr: float | None = None
    seed: int = 0

    def __post_init__(self):
        if not self.ls:
            raise SAECoreError("the sweep needs at least one value of l")
        bad = [l for l in self.ls if not l > 0]
        if bad:
            raise SAECoreError(f"every l must be > 0 (got {bad})")
        unknown = set(self.references) - set(REFERENCE_ARCHS)
        if unknown:
            raise SAECoreError(f"reference architectures must be among {REFERENCE_ARCHS} (got {sorted(unknown)})")

    def sae_configs(self, d_in: int, model_name: str, hook: str) -> list[SAEConfig]:
        common = dict(d_in=d_in, d_sae=self.d_sae, k=self.k, model_name=model_name, hook_name=hook)
        cfgs = [SAEConfig(arch="sampled", l=float(l), scoring=s, pool_rule=self.pool_rule, **common)
                for s in self.scorings for l in sorted(self.ls)]
        return cfgs + [SAEConfig(arch=a, **common) for a in self.references]

    def trainer(self) -> TrainerConfig:
        return TrainerConfig(total_tokens=self.tokens, batch_size=self.batch_size, lr=self.lr,
                             seed=self.seed)


def run_sweep(ws: Workspace, acts: Artifact, sc: SweepConfig, *, model=None,
              on_run: Callable[[int, int, SAEConfig], Callable[[StepLog, int], None] | None] | None = None
              ) -> Artifact:
    """Train every SAE of the sweep (reusing finished ones) and register the sweep's table."""
    name = artifact_name(acts.model or "acts", acts.hook, {"acts": acts.name, "sweep": asdict(sc)})
    if (existing := ws.get("sweep", name)) is not None:
        return existing
    store = ActivationStore.open(acts.path)
    split = open_split(store)
    cfgs = sc.sae_configs(store.d, acts.model or "", acts.hook or "")
    rows = []
    for i, cfg in enumerate(cfgs):
        on_step = on_run(i, len(cfgs), cfg) if on_run else None
        sae_art = train_to_workspace(ws, acts, cfg, sc.trainer(), split=split, model=model, on_step=on_step)
        metrics = read_json(sae_art.path / "metrics.json")
        rows.append({"arch": cfg.arch, "l": cfg.l if cfg.arch == "sampled" else None,
                     "scoring": cfg.scoring if cfg.arch == "sampled" else None,
                     "k": cfg.k, "d_sae": cfg.d_sae, "sae": sae_art.name, **metrics})
    meta = {"k": sc.k, "d_sae": sc.d_sae, "ls": list(sc.ls), "scorings": list(sc.scorings),
            "n_saes": len(rows), "activations": acts.name}
    with ws.create("sweep", name, model=acts.model, hook=acts.hook, meta=meta, overwrite=True) as d:
        atomic_write_json(d / "table.json", rows)
        atomic_write_json(d / "sweep.json", asdict(sc))
        atomic_write_bytes(d / "table.csv", pd.DataFrame(rows).to_csv(index=False).encode())
    return ws.get("sweep", name)


def load_sweep_table(sweep: Artifact) -> pd.DataFrame:
    return pd.DataFrame(read_json(sweep.path / "table.json"))
