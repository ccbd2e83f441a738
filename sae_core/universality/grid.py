"""Layer by layer: a universality result for every hook pair of model A x model B, as heatmaps.

``grid_to_workspace(ws, cfg)`` first harvests each model once, at all its hooks in one pass
(``paired_grid_to_workspace``), then runs ``universality_to_workspace`` for each pair of
``hooks_a`` x ``hooks_b`` (default: every block's residual stream of each model). Each (model,
hook)'s SAE is trained once, whatever pair it is in: the cell jobs find the harvests and SAEs in
the workspace.
A cell whose filters leave too few pairs is kept as a message, not a failure of the grid.

The grid's best cell per measure is tested against the null of the maximum: each run shuffles
the pairing of every cell and keeps the largest score, so the p-value says how often chance
makes *some* cell that good (a single cell's null would overstate a best-of-many).
Writes a ``universality_grid`` artifact (``grid.json``); each cell stays a ``universality``
artifact of its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from sae_core.io import JsonResult, atomic_write_json
from sae_core.universality import nulls
from sae_core.universality.job import Universality, UniversalityConfig, universality_to_workspace
from sae_core.universality.measures import UniversalityError
from sae_core.workspace import Artifact, Workspace, artifact_name

KIND = "universality_grid"
REVISION = 2  # 2: each cell's mean correlations and filter counts (the authors' per-layer-pair figures)
CELL_FIELDS = ("n_pairs", "mean_corr", "mean_corr_all")  # per cell, whatever the measure


def _light() -> UniversalityConfig:
    return UniversalityConfig(d_sae=512, k=16, train_tokens=500_000, n_tokens=100_000)


@dataclass(frozen=True)
class GridConfig:
    base: UniversalityConfig = field(default_factory=_light)  # models, SAE and matching settings
    hooks_a: tuple[str, ...] = ()   # () = every block's hook_resid_post
    hooks_b: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"base": self.base.to_json(), "hooks_a": list(self.hooks_a), "hooks_b": list(self.hooks_b)}


class Grid(JsonResult):
    FILE = "grid.json"


def resid_hooks(model) -> tuple[str, ...]:
    return tuple(f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers))


def harvest_grid(ws: Workspace, cfg: GridConfig, *, load: Callable[[str], object] | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Every cell's paired harvest, each model run once (``cfg``'s hooks must be filled in): the
    grid's only pass that runs the models, so an app can hold the models' locks for it alone."""
    from sae_core.activations.paired import paired_grid_to_workspace

    b = cfg.base
    return paired_grid_to_workspace(ws, b.model_a, list(cfg.hooks_a), b.model_b, list(cfg.hooks_b),
                                    n_tokens=b.n_tokens, seed=b.seed, context_size=b.context_size, load=load,
                                    on_progress=on_progress)


def _matched_rows(ws: Workspace, u: Universality) -> tuple[np.ndarray, np.ndarray]:
    from sae_core.sae.io import load_sae

    a, b = (load_sae(ws.get("sae", u.results["saes"][s]).path).W_dec.detach().double().numpy() for s in "ab")
    ia = np.array([p["a"] for p in u.results["pairs"]], dtype=np.int64)
    ib = np.array([p["b"] for p in u.results["pairs"]], dtype=np.int64)
    return a[ia], b[ib]


def grid_to_workspace(ws: Workspace, cfg: GridConfig = GridConfig(), *, load: Callable[[str], object] | None = None,
                      on_progress: Callable[[int, int, str], None] | None = None) -> Artifact:
    """Build (or find) the layer-by-layer grid of ``cfg`` (module doc)."""
    if load is None:
        from sae_core.models.loading import load_model as load
    base = cfg.base
    hooks_a = cfg.hooks_a or resid_hooks(load(base.model_a))
    hooks_b = cfg.hooks_b or resid_hooks(load(base.model_b))
    full = replace(cfg, hooks_a=tuple(hooks_a), hooks_b=tuple(hooks_b))
    name = artifact_name(base.model_b, "layers", {"grid": full.to_json(), "revision": REVISION})
    if (existing := ws.get(KIND, name)) is not None:
        return existing
    report = on_progress or (lambda done, total, text: None)
    total = len(hooks_a) * len(hooks_b) + 2
    harvest_grid(ws, full, load=load, on_progress=lambda d, t: report(d / t, total, "harvesting both models at "
                                                                                     "every hook"))
    cells, opened = [], {}
    for i, ha in enumerate(hooks_a):
        for j, hb in enumerate(hooks_b):
            step = 1 + i * len(hooks_b) + j
            where = f"{ha} x {hb}"

            def sub(done, n, text, step=step, where=where):
                report(step + done / n, total, f"{where}: {text}")
            cell = {"hook_a": ha, "hook_b": hb, "i": i, "j": j}
            try:
                art = universality_to_workspace(ws, replace(base, hook_a=ha, hook_b=hb, sae_a=None, sae_b=None),
                                                load=load, on_progress=sub)
            except UniversalityError as e:
                cells.append({**cell, "error": str(e)})
                continue
            u = Universality.open(art.path)
            opened[(i, j)] = u
            means = u.results["step_mean_corr"]
            cells.append({**cell, "artifact": art.name, "n_pairs": u.results["n_pairs"], "steps": u.results["steps"],
                          "mean_corr_all": means[0], "mean_corr": means[-1],
                          "scores": {m: {"value": s["value"], "p": s["shuffled"]["p"],
                                         "null_mean": s["shuffled"]["null_mean"]}
                                     for m, s in u.results["scores"].items()}})
    if not opened:
        raise UniversalityError("no hook pair of the grid kept enough matched pairs: " + "; ".join(
            f"{c['hook_a']} x {c['hook_b']}: {c['error']}" for c in cells))
    report(total - 1, total, "the best cells against the null of the maximum")
    rows = {k: _matched_rows(ws, u) for k, u in opened.items()}
    best = {}
    for m in base.analysis.measures:
        values = {k: u.results["scores"][m]["value"] for k, u in opened.items()}
        (bi, bj), top = max(values.items(), key=lambda kv: kv[1])
        sig = nulls.max_null(base.analysis.measure(m), list(rows.values()), top, runs=base.analysis.runs,
                             seed=base.analysis.seed)
        best[m] = {"i": bi, "j": bj, "hook_a": hooks_a[bi], "hook_b": hooks_b[bj], "value": top,
                   "max_null": sig.to_json()}
    results = {"hooks_a": list(hooks_a), "hooks_b": list(hooks_b), "cells": cells, "best": best,
               "measures": list(base.analysis.measures)}
    meta = {"inputs": [{"model": base.model_a, "side": "a"}, {"model": base.model_b, "side": "b"}],
            "cells": len(cells), "failed": sum("error" in c for c in cells)}
    with ws.create(KIND, name, model=base.model_b, hook="layers", meta=meta, overwrite=True) as d:
        atomic_write_json(d / Grid.FILE, {"config": full.to_json(), "results": results})
    return ws.get(KIND, name)


def heat(results: dict, measure: str, key: str = "value") -> np.ndarray:
    """``[len(hooks_a), len(hooks_b)]`` of a cell field (``value``, ``p``, ``null_mean`` of the
    measure, or one of ``CELL_FIELDS``, any measure: the pairs kept and their mean correlation
    before and after the filters); NaN where a cell failed."""
    out = np.full((len(results["hooks_a"]), len(results["hooks_b"])), np.nan)
    for c in results["cells"]:
        if "error" not in c:
            v = c[key] if key in CELL_FIELDS else c["scores"][measure][key]
            out[c["i"], c["j"]] = np.nan if v is None else v
    return out
