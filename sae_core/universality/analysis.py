"""Score one matched pair of feature spaces: every measure, its nulls and its interval.

``analyse(dec_a, dec_b, matches, cfg)`` takes both SAEs' decoder rows (``[S, d]``: features as data
points) and the matched pairs, and returns, per measure of ``cfg.measures``, the paired value, the
shuffled-pairing null, the random-subset null (rows drawn from all live features of each SAE) and
a bootstrap interval, plus warnings a reader needs (few pairs against the width, saturated SVCCA).
Following the paper, a pair set of 100 or fewer gets ``cfg.runs_small`` null runs (1000).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from sae_core.universality import measures as M
from sae_core.universality import nulls
from sae_core.universality.matching import Matches
from sae_core.universality.measures import MEASURES, UniversalityError

SMALL_PAIRS = 100
MIN_PAIRS = 10


@dataclass(frozen=True)
class AnalysisConfig:
    measures: tuple[str, ...] = MEASURES
    # null runs per measure and null
    runs: int = field(default=100, metadata={"help": "Null runs per measure (1000 when 100 pairs or fewer)."})
    runs_small: int = 1000         # ... when there are SMALL_PAIRS pairs or fewer
    bootstrap_runs: int = 100
    var_threshold: float = 0.99    # SVCCA's variance rule
    paper_compat: bool = field(default=False, metadata={
        "help": "SVCCA with one direction, as the authors' code (a bug there)."})
    rsa_rows: int = 500            # RSA subsamples rows past this (124,750 similarity pairs)
    knn_k: int = 10
    seed: int = 0

    def __post_init__(self):
        unknown = [m for m in self.measures if m not in MEASURES]
        if unknown or not self.measures:
            raise UniversalityError(f"measures {list(self.measures)}: choose from {', '.join(MEASURES)}")
        if min(self.runs, self.runs_small, self.bootstrap_runs) < nulls.MIN_RUNS:
            raise UniversalityError(f"runs, runs_small and bootstrap_runs must each be at least {nulls.MIN_RUNS}")

    def to_json(self) -> dict:
        return {**asdict(self), "measures": list(self.measures)}

    def measure(self, name: str) -> M.Measure:
        kw = {"svcca": {"var_threshold": self.var_threshold, "paper_compat": self.paper_compat},
              "rsa": {"max_rows": self.rsa_rows, "seed": self.seed}, "mutual_knn": {"k": self.knn_k}}
        return M.measure(name, **kw.get(name, {}))


def analyse(dec_a: np.ndarray, dec_b: np.ndarray, matches: Matches, cfg: AnalysisConfig = AnalysisConfig(), *,
            live_a: np.ndarray | None = None, live_b: np.ndarray | None = None,
            on_progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Per measure: value, what it used, both nulls, the bootstrap interval (module doc)."""
    n = len(matches)
    if n < MIN_PAIRS:
        left = ", ".join(f"{stage}: {k}" for stage, k in matches.steps)
        raise UniversalityError(f"only {n} matched pair(s) left after filtering ({left}); the measures need at "
                                f"least {MIN_PAIRS}. Lower the correlation threshold, turn filters off, or use "
                                "more tokens or larger SAEs")
    dec_a, dec_b = np.asarray(dec_a, dtype=np.float64), np.asarray(dec_b, dtype=np.float64)
    X, Y = dec_a[matches.a], dec_b[matches.b]
    pool_a = dec_a if live_a is None else dec_a[live_a]
    pool_b = dec_b if live_b is None else dec_b[live_b]
    runs = cfg.runs_small if n <= SMALL_PAIRS else cfg.runs
    out: dict = {"n_pairs": n, "runs": runs, "scores": {}, "warnings": []}
    width = max(X.shape[1], Y.shape[1])
    if n < 10 * width and ("cka" in cfg.measures):
        out["warnings"].append(f"{n} pairs against width {width}: biased CKA is inflated when pairs are few "
                               "against the dimension (even for independent data); read the debiased value "
                               "and the nulls")
    for i, name in enumerate(cfg.measures):
        if on_progress:
            on_progress(i, len(cfg.measures), f"{name}: paired, {runs} shuffled, {runs} random subsets")
        f = cfg.measure(name)
        s = f(X, Y)
        shuffled = nulls.shuffled(f, X, Y, s.value, runs=runs, seed=cfg.seed)
        subsets = nulls.random_subsets(f, pool_a, pool_b, n, s.value, runs=runs, seed=cfg.seed + 1) \
            if min(pool_a.shape[0], pool_b.shape[0]) >= n else None
        lo, hi = nulls.bootstrap(f, X, Y, runs=cfg.bootstrap_runs, seed=cfg.seed + 2)
        out["scores"][name] = {"value": s.value, "used": s.used, "shuffled": shuffled.to_json(),
                               "random_subsets": subsets.to_json() if subsets else None, "ci95": [lo, hi]}
        if name == "svcca" and s.used.get("saturated"):
            out["warnings"].append(f"SVCCA kept {s.used['k_x']} + {s.used['k_y']} directions for {n} pairs, so "
                                   "some canonical correlations are 1 by construction; compare with its nulls")
    return out
