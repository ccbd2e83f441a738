"""The l trade-off read from a sweep's table: every metric against l, and which l wins which.

The Sampled-SAE paper finds that no single l is best on every metric (shared structure,
reconstruction, downstream performance). ``best_l`` and ``verdict`` state, from the table itself,
which Sampled-SAE wins each metric that has a better direction, and whether one l wins them all.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class TradeoffMetric:
    column: str
    title: str
    better: str | None       # "higher", "lower", or None (a budget or a description, not a score)


TRADEOFF_METRICS = [
    TradeoffMetric("fvu", "FVU (reconstruction)", "lower"),
    TradeoffMetric("ce_loss_recovered", "CE loss recovered", "higher"),
    TradeoffMetric("kl_recovered", "KL recovered", "higher"),
    TradeoffMetric("l0", "L0 (active latents per token)", None),
    TradeoffMetric("pairwise_overlap", "shared structure: pairwise overlap", "higher"),
    TradeoffMetric("distinct_latents_per_batch", "distinct latents per batch", None),
    TradeoffMetric("probe_sae_top_1", "sparse probing, k = 1 (test accuracy)", "higher"),
    TradeoffMetric("probe_sae_top_5", "sparse probing, k = 5 (test accuracy)", "higher"),
    TradeoffMetric("absorption_rate", "feature absorption rate", "lower"),
    TradeoffMetric("dead_fraction", "never active on eval (dead)", "lower"),
]
BY_COLUMN = {m.column: m for m in TRADEOFF_METRICS}


def _point(row) -> str:
    return f"l={row['l']:g} ({row['scoring']})"


def best_l(table: pd.DataFrame, scorings: list[str] | None = None) -> list[dict]:
    """Per ranked metric present in the table: the best Sampled-SAE (its l and scoring rule), its
    value, and the BatchTopK / TopK values beside it. Ties go to the smaller l."""
    sampled = table[table["arch"] == "sampled"]
    if scorings is not None:
        sampled = sampled[sampled["scoring"].isin(scorings)]
    out = []
    for m in TRADEOFF_METRICS:
        if m.better is None or m.column not in sampled or sampled[m.column].isna().all():
            continue
        rows = sampled.dropna(subset=[m.column]).sort_values(["l", "scoring"])
        best = rows.loc[rows[m.column].idxmax() if m.better == "higher" else rows[m.column].idxmin()]
        refs = {arch: float(table.loc[table["arch"] == arch, m.column].iloc[0])
                for arch in ("batchtopk", "topk") if (table["arch"] == arch).any() and m.column in table}
        out.append({"metric": m.title, "column": m.column, "better": m.better, "best": _point(best),
                    "l": float(best["l"]), "value": float(best[m.column]), **refs})
    return out


def verdict(best: list[dict]) -> str:
    """One sentence from ``best_l``: whether a single l wins every ranked metric, and which wins which."""
    if not best:
        return "No ranked metric is in this sweep's table yet."
    by_l: dict[float, list[str]] = {}
    for b in best:
        by_l.setdefault(b["l"], []).append(b["metric"])
    parts = "; ".join(f"l={l:g} for {', '.join(ms)}" for l, ms in sorted(by_l.items()))
    if len(by_l) == 1:
        return f"One l is best on every metric measured here: {parts}."
    return f"No single l is best on every metric: {parts}."
