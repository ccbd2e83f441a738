"""Is a paired score more than chance? Nulls, p-values, z-scores and bootstrap intervals.

- ``shuffled``: the same rows with Y's order permuted (pairs broken, each space unchanged);
- ``random_subsets``: as many rows drawn at random from each side's full set (all decoder rows of
  each SAE), unpaired;
- ``p = (1 + #{null >= observed}) / (1 + runs)`` (never 0: the observed pairing counts as one draw),
  ``z = (observed - mean(null)) / std(null)``; ``p_authors = #{null >= observed} / runs``, as the
  authors' code wrote it (wlg1/univ_feat_geom ``getScores_pythia.py:run_expm``, ``svcca_rand_pval``),
  which can be 0;
- ``bootstrap``: an interval from resampled pairs (half-size subsets by default; see its doc);
- ``max_null``: for a heatmap of several layer pairs, each run shuffles every pair and keeps the
  largest score, so the best pair is tested against the best of chance, not one pair's null.

The null scores are kept (``Significance.null``) so a page can draw their histogram.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from sae_core.universality.measures import Measure, Score, UniversalityError, _np

NULLS = ("shuffled", "random_subsets")
MIN_RUNS = 10


@dataclass(frozen=True)
class Significance:
    observed: float
    null: np.ndarray      # [runs] null scores
    p: float
    z: float
    kind: str

    @property
    def null_mean(self) -> float:
        return float(self.null.mean())

    def to_json(self) -> dict:
        return {"observed": self.observed, "p": self.p, "p_authors": float(np.mean(self.null >= self.observed)),
                "z": self.z, "kind": self.kind,
                "null_mean": self.null_mean, "null_std": float(self.null.std()), "runs": int(self.null.size),
                "null": self.null.tolist()}


class _Plain(Measure):
    """Any function of two matrices as a ``Measure`` (no reusable state)."""

    def __init__(self, fn):
        self.fn = fn

    def prepare(self, M):
        from sae_core.universality.measures import State

        return State(_np(M))

    def compare(self, sx, sy) -> Score:
        return self.fn(sx.M, sy.M)


def _measure(m) -> Measure:
    return m if isinstance(m, Measure) else _Plain(m)


def _check_runs(runs: int) -> None:
    if runs < MIN_RUNS:
        raise UniversalityError(f"runs={runs}: a permutation null needs at least {MIN_RUNS} runs (100 is usual)")


def p_value(observed: float, null: np.ndarray) -> float:
    return float((1 + np.sum(null >= observed)) / (1 + null.size))


def significance(observed: float, null: Sequence[float], kind: str) -> Significance:
    null = np.asarray(null, dtype=np.float64)
    std = null.std()
    z = float((observed - null.mean()) / std) if std > 0 else (0.0 if observed == null.mean() else float("inf"))
    return Significance(float(observed), null, p_value(observed, null), z, kind)


def shuffled(measure: Callable[[np.ndarray, np.ndarray], Score], X, Y, observed: float, *, runs: int = 100,
             seed: int = 0, on_run: Callable[[], None] | None = None) -> Significance:
    """Null of ``measure`` with the pairing broken: Y's rows permuted, X left as it is."""
    _check_runs(runs)
    m = _measure(measure)
    sx, sy = m.prepare(X), m.prepare(Y)
    n = sy.M.shape[0]
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(runs):
        null.append(m.compare(sx, m.take(sy, rng.permutation(n))).value)
        if on_run:
            on_run()
    return significance(observed, null, "shuffled")


def random_subsets(measure: Callable[[np.ndarray, np.ndarray], Score], X_all, Y_all, n: int, observed: float, *,
                   runs: int = 100, seed: int = 0, on_run: Callable[[], None] | None = None) -> Significance:
    """Null of ``measure`` on ``n`` rows drawn at random from each side's full set (unpaired)."""
    _check_runs(runs)
    X_all, Y_all = _np(X_all), _np(Y_all)
    if n > min(X_all.shape[0], Y_all.shape[0]):
        raise UniversalityError(f"random subsets of {n} rows, but the sides have {X_all.shape[0]} and "
                                f"{Y_all.shape[0]} rows")
    m = _measure(measure)
    px, py = m.prepare(X_all), m.prepare(Y_all)
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(runs):
        null.append(m.compare(m.take(px, rng.choice(X_all.shape[0], n, replace=False)),
                              m.take(py, rng.choice(Y_all.shape[0], n, replace=False))).value)
        if on_run:
            on_run()
    return significance(observed, null, "random_subsets")


BOOTSTRAP = ("subsample", "percentile")


def bootstrap(measure: Callable[[np.ndarray, np.ndarray], Score], X, Y, *, runs: int = 100, level: float = 0.95,
              seed: int = 0, method: str = "subsample") -> tuple[float, float]:
    """An interval for ``measure`` over resampled pairs.

    ``percentile``: the classic bootstrap (pairs drawn with replacement). Repeated pairs are
    identical rows on both sides, which pulls every similarity measure up, so its interval can
    miss the paired value altogether. ``subsample`` (default): half-size subsets without
    replacement, centred on the paired value, their spread scaled by sqrt(m / n) (Politis and
    Romano's subsampling interval; centring on the subsets' own mean removes the size bias of
    measures like biased CKA)."""
    _check_runs(runs)
    if method not in BOOTSTRAP:
        raise UniversalityError(f"bootstrap method {method!r}; choose one of {', '.join(BOOTSTRAP)}")
    f = _measure(measure)
    sx, sy = f.prepare(X), f.prepare(Y)
    n = sx.M.shape[0]
    m = n if method == "percentile" else n // 2
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(runs):
        rows = rng.integers(0, n, n) if method == "percentile" else rng.choice(n, m, replace=False)
        try:
            vals.append(f.compare(f.take(sx, rows), f.take(sy, rows)).value)
        except UniversalityError:  # a resample can be too small or too repetitive for a measure
            continue
    if len(vals) < MIN_RUNS:
        raise UniversalityError(f"bootstrap: only {len(vals)} of {runs} resamples could be scored; too few pairs")
    q = [(1 - level) / 2, (1 + level) / 2]
    if method == "percentile":
        lo, hi = np.quantile(vals, q)
        return float(lo), float(hi)
    observed = f.compare(sx, sy).value
    dev = (np.asarray(vals) - np.mean(vals)) * np.sqrt(m / n)
    d_lo, d_hi = np.quantile(dev, q)
    return float(observed - d_hi), float(observed - d_lo)


def max_null(measure: Callable[[np.ndarray, np.ndarray], Score], pairs: Sequence[tuple[np.ndarray, np.ndarray]],
             observed_max: float, *, runs: int = 100, seed: int = 0) -> Significance:
    """Null of the largest score over several matched pairs of spaces (a heatmap's best cell)."""
    _check_runs(runs)
    m = _measure(measure)
    states = [(m.prepare(X), m.prepare(Y)) for X, Y in pairs]
    rng = np.random.default_rng(seed)
    null = [max(m.compare(sx, m.take(sy, rng.permutation(sy.M.shape[0]))).value for sx, sy in states)
            for _ in range(runs)]
    return significance(observed_max, null, "max over pairs")
