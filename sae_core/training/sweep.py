"""The l-sweep: one Sampled-SAE per (l, scoring rule), plus BatchTopK and TopK references.

Every SAE of a sweep trains on the same batches with the same seed, so differences between rows
come from the architecture alone. They train in lockstep (``train_many``): each batch is read once
and every SAE steps on it, so a store streamed from disk (``sae_core.training.data``) is read once per
epoch for the whole sweep, not once per SAE. Each SAE ends exactly as it would alone, so finished
ones are reused by later sweeps. The sweep artifact holds ``table.json`` / ``table.csv`` (one row
per SAE: its settings, metrics and the name of its ``sae`` artifact).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Callable, get_args

import pandas as pd

from sae_core.activations import ActivationStore
from sae_core.errors import SAECoreError
from sae_core.io import atomic_write_bytes, atomic_write_json, read_json
from sae_core.sae.config import SAEConfig, SAEConfigError, Scoring, require_partial_pool, sae_label
from sae_core.training.job import train_all_to_workspace
from sae_core.sae.sampled import RULE_REVISION
from sae_core.training.loop import TrainerConfig
from sae_core.workspace import Artifact, Workspace, artifact_name

REFERENCE_ARCHS = ("batchtopk", "topk")


@dataclass(frozen=True)
class SweepConfig:
    k: int
    d_sae: int
    ls: tuple[float, ...]
    # l2sq is opt-in: under pool_rule "top" it trains the same SAE as l2 (the same order)
    scorings: tuple[str, ...] = field(default=("l2", "entropy"),
                                      metadata={"help": "Comma-separated scoring rules (l2, l2sq, entropy)."})
    pool_rule: str = field(default="top", metadata={"help": "Sampled-SAE pool: top | sample (drawn by score)."})
    references: tuple[str, ...] = field(default=REFERENCE_ARCHS,
                                        metadata={"help": "Reference architectures ('' for none)."})
    tokens: int = 500_000
    batch_size: int = 1024
    lr: float | None = None
    seed: int = 0
    # None: CUDA when available, else the CPU (the trainer's field, so its doc too)
    device: str | None = field(default=None,
                               metadata={f.name: f for f in fields(TrainerConfig)}["device"].metadata)

    def __post_init__(self):
        if not self.ls:
            raise SAECoreError("the sweep needs at least one value of l")

        # SAEConfig holds the rules for l, the scoring rule and the pool rule: each setting is checked
        # by building a Sampled-SAE config with it (wide enough that only that setting can fail)
        wide = dict(arch="sampled", d_in=1, d_sae=2**62, k=1)

        def refused(**setting) -> bool:
            try:
                SAEConfig(**wide, **setting)
            except SAEConfigError:
                return True
            return False
        bad = [l for l in self.ls if refused(l=l)]
        if bad:
            raise SAEConfigError(f"every l must be a finite number >= 1 (got {bad}); l=1 is a pool "
                                 "of K latents, the smallest")
        if not self.scorings or any(refused(scoring=s) for s in self.scorings):
            raise SAECoreError(f"scorings={list(self.scorings)}; choose one or more of "
                               f"{', '.join(map(repr, get_args(Scoring)))}")
        SAEConfig(**wide, pool_rule=self.pool_rule)  # refused: its message names the choices
        # K and the width, now rather than after the harvest (K > d_sae used to fail only once the
        # activations were in, and K·l > d_sae trained plain BatchTopK as "sampled"; issue #28)
        SAEConfig(arch="topk", d_in=1, d_sae=self.d_sae, k=self.k)
        require_partial_pool(self.k, max(self.ls), self.d_sae)
        unknown = set(self.references) - set(REFERENCE_ARCHS)
        if unknown:
            raise SAECoreError(f"reference architectures must be among {REFERENCE_ARCHS} (got {sorted(unknown)})")
        self.trainer()  # tokens, batch size and device are checked now, before any harvest

    def sae_configs(self, d_in: int, model_name: str, hook: str) -> list[SAEConfig]:
        common = dict(d_in=d_in, d_sae=self.d_sae, k=self.k, model_name=model_name, hook_name=hook)
        cfgs = [SAEConfig(arch="sampled", l=float(l), scoring=s, pool_rule=self.pool_rule, **common)
                for s in self.scorings for l in sorted(self.ls)]
        return cfgs + [SAEConfig(arch=a, **common) for a in self.references]

    def trainer(self) -> TrainerConfig:
        return TrainerConfig(total_tokens=self.tokens, batch_size=self.batch_size, lr=self.lr,
                             seed=self.seed, device=self.device)


def run_sweep(ws: Workspace, acts: Artifact, sc: SweepConfig, *, model=None, model_lock=None,
              on_progress: Callable[[int, int, str], None] | None = None) -> Artifact:
    """Train every SAE of the sweep in lockstep, one pass over the data (reusing finished ones),
    and register the sweep's table. ``on_progress(done, total, text)``: see
    ``train_all_to_workspace`` (and for ``model_lock``)."""
    name = artifact_name(acts.model or "acts", acts.hook, {"acts": acts.name, "sweep": asdict(sc),
                                                          "rule_revision": RULE_REVISION})
    if (existing := ws.get("sweep", name)) is not None:
        return existing
    store = ActivationStore.open(acts.path)
    cfgs = sc.sae_configs(store.d, acts.model or "", acts.hook or "")
    saes = train_all_to_workspace(ws, acts, cfgs, sc.trainer(), model=model, model_lock=model_lock,
                                  on_progress=on_progress)
    rows = []
    for cfg, sae_art in zip(cfgs, saes):
        metrics = read_json(sae_art.path / "metrics.json")
        rows.append({"arch": cfg.arch, "l": cfg.l if cfg.arch == "sampled" else None,
                     "scoring": cfg.scoring if cfg.arch == "sampled" else None,
                     "pool_rule": cfg.pool_rule if cfg.arch == "sampled" else None,
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


# history.json fields shown as training curves: field -> (axis title, log axis)
TRAINING_CURVES = {
    "sq_err": ("squared error per token (scaled inputs)", True),
    "aux": ("AuxK loss", False),
    "l0": ("L0 (training rule)", False),
    "pool_churn": ("pool churn (share new since the last batch)", False),
    "aux_dead_fraction": ("dead for AuxK (share of latents)", False),
    "aux_share": ("AuxK share of the loss", False),
}
_OLD_HISTORY_NAMES = {"mse": "sq_err", "dead_fraction": "aux_dead_fraction"}  # before issue #11


def load_training_curves(ws: Workspace, table: pd.DataFrame) -> pd.DataFrame:
    """Every SAE's step log in one long frame: ``sae``, ``label`` (its config, as in the legend),
    ``scoring``, ``tokens`` and the ``TRAINING_CURVES`` fields (NaN where a run did not log one,
    e.g. pool churn outside Sampled-SAEs). SAEs whose artifact or history is missing are skipped."""
    frames = []
    for row in table.itertuples(index=False):
        art = ws.get("sae", row.sae)
        path = art.path / "history.json" if art is not None else None
        if path is None or not path.exists():
            continue
        hist = pd.DataFrame(read_json(path)).rename(columns=_OLD_HISTORY_NAMES)
        hist = hist.reindex(columns=["tokens", *TRAINING_CURVES])
        frames.append(hist.assign(sae=row.sae, label=sae_label(row._asdict()),
                                  scoring=row.scoring if row.arch == "sampled" else None))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["sae", "label", "scoring", "tokens", *TRAINING_CURVES])


def text_sources(table: pd.DataFrame) -> list[str]:
    """Where the sweep's numbers were measured: the text its activations came from (FVU, L0, ...)
    and the text of the CE/KL recovered, one line each (one per distinct value)."""
    out = []
    for col, what in (("text_source", "Activations (FVU, L0, sparsity) from"),
                      ("eval_text_source", "CE/KL recovered on")):
        values = sorted(set(table[col].dropna())) if col in table else []
        out += [f"{what}: {v}" for v in values]
    if "text_source" not in table:
        out.append("Text: not recorded (sweep trained before text sources were recorded)")
    return out


def fvu_warnings(table: pd.DataFrame) -> list[str]:
    """One line per SAE whose held-out FVU (either rule) is >= 1: it reconstructs worse than the
    mean of the activations would, and its other numbers should not be trusted."""
    out = []
    for row in table.to_dict("records"):
        for col, rule in (("fvu", "inference rule"), ("fvu_batch_rule", "batch rule")):
            v = row.get(col)
            if v is not None and v == v and v >= 1:
                out.append(f"{sae_label(row)}: FVU {v:.3f} with the {rule} (>= 1: worse than predicting the "
                           f"mean); SAE {row['sae']}")
    return out


def dead_by_design(table: pd.DataFrame) -> list[str | None]:
    """Per row, why a Sampled-SAE's dead fraction is high, where its pool explains it (else None):
    at most K·l distinct latents can fire per batch, so with l=1 at K=16 and d_sae=512 about 97% of
    the latents never fire on the eval set, by design, not a failed run (issue #28). Explained
    means the latents that fired are no more than the pool (with a quarter's slack: the pool may
    move between batches)."""
    out = []
    for row in table.to_dict("records"):
        dead = row.get("dead_fraction")
        note = None
        if row.get("arch") == "sampled" and dead is not None and dead == dead:
            pool = SAEConfig(arch="sampled", d_in=1, d_sae=int(row["d_sae"]), k=int(row["k"]),
                             l=float(row["l"])).pool_size
            if pool < row["d_sae"] and (1 - dead) * row["d_sae"] <= 1.25 * pool:
                note = (f"by design: at most K·l = {int(row['k'])}·{row['l']:g} = {pool} of {int(row['d_sae'])} "
                        f"latents can fire per batch")
        out.append(note)
    return out


def dead_by_design_caption(table: pd.DataFrame) -> str | None:
    """One line for under the sweep's table, with the smallest pool's numbers, when some SAE's dead
    fraction is its pool's doing (``dead_by_design``); else None."""
    notes = dead_by_design(table)
    rows = [r for r, n in zip(table.to_dict("records"), notes) if n]
    if not rows:
        return None
    r = min(rows, key=lambda r: r["k"] * r["l"])
    return (f"Never active on eval: a Sampled-SAE's share is by design, not a failed run. At most K·l distinct "
            f"latents can fire per batch, so l={r['l']:g} ({int(r['k'] * r['l'])} of {int(r['d_sae'])} latents) "
            f"leaves {r['dead_fraction']:.1%} never active (column \"why so many never fire\").")
