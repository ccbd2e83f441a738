"""Similarity of two matched spaces: pure functions over two matrices whose row i in one is paired
with row i in the other (matched SAE decoder rows: features as data points).

- ``svcca(X, Y)``: centre each, keep the top principal directions (enough for ``var_threshold`` of
  the variance, or a fixed ``k``), CCA between the two reduced spaces, mean canonical correlation.
  ``paper_compat=True`` keeps one direction per side, as the code of arXiv 2410.06981 did (its
  variance test stopped after the first), so the value is |corr| of the first principal scores.
- ``rsa(X, Y)``: each side's row-by-row Pearson similarity matrix, then the Spearman correlation
  of their lower triangles (rows subsampled past ``max_rows``).
- ``linear_cka(X, Y, debiased=False)``: linear CKA (Kornblith et al. 2019); ``debiased`` uses the
  unbiased HSIC estimator (Song et al. 2012), which is near 0 for independent data at any n.
- ``mutual_knn(X, Y, k)``: for every row, its k nearest rows by cosine in each space; the mean
  fraction of neighbours the two sets share (and their Jaccard index, as the paper's code scored).

Each returns a ``Score``: the value and what it used. Inputs are float64 numpy (torch is accepted).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sae_core.errors import SAECoreError

MEASURES = ("svcca", "rsa", "cka", "cka_debiased", "mutual_knn")


class UniversalityError(SAECoreError):
    """A universality analysis that cannot run as asked (too few pairs, mismatched inputs, ...)."""


@dataclass(frozen=True)
class Score:
    measure: str
    value: float
    n: int                                   # rows (matched pairs) it was computed on
    used: dict = field(default_factory=dict)  # what it kept or chose (k, subsample, ...)

    def to_json(self) -> dict:
        return {"measure": self.measure, "value": self.value, "n": self.n, "used": self.used}


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor, on any device
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def _pair(X, Y, least: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    X, Y = _np(X), _np(Y)
    if X.ndim != 2 or Y.ndim != 2:
        raise UniversalityError(f"{what} takes two 2-D matrices (rows: matched pairs); got shapes "
                                f"{X.shape} and {Y.shape}")
    if X.shape[0] != Y.shape[0]:
        raise UniversalityError(f"{what}: {X.shape[0]} rows against {Y.shape[0]}; row i of each must be "
                                "one matched pair, so both need the same number of rows")
    if X.shape[0] < least:
        raise UniversalityError(f"{what} needs at least {least} matched pairs; got {X.shape[0]}. Keep more "
                                "pairs (lower the correlation threshold, drop filters) or use more tokens")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise UniversalityError(f"{what}: the inputs hold NaN or infinite values")
    return X, Y


def _top_directions(Xc: np.ndarray, var_threshold: float, k: int | None) -> tuple[np.ndarray, int, float]:
    """(principal scores [n, k], k, fraction of variance they keep) of centred ``Xc``."""
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    var = S ** 2
    total = var.sum()
    if total == 0:
        raise UniversalityError("svcca: one side has no variance (all matched rows are equal)")
    rank = int((S > S[0] * max(Xc.shape) * np.finfo(float).eps).sum())
    if k is None:
        k = int(np.searchsorted(np.cumsum(var) / total, var_threshold - 1e-12) + 1)
    k = min(k, rank)
    return U[:, :k] * S[:k], k, float(var[:k].sum() / total)


def canonical_correlations(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Canonical correlations of two column spaces (centred inputs): singular values of Qa^T Qb."""
    qa, _ = np.linalg.qr(A)
    qb, _ = np.linalg.qr(B)
    return np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)


def svcca(X, Y, var_threshold: float = 0.99, k: int | None = None, paper_compat: bool = False) -> Score:
    if not 0 < var_threshold <= 1:
        raise UniversalityError(f"var_threshold={var_threshold}: give a fraction of variance in (0, 1]")
    if k is not None and k < 1:
        raise UniversalityError(f"k={k}: keep at least one direction (or None for the variance rule)")
    X, Y = _pair(X, Y, 3, "svcca")
    if paper_compat:
        k = 1
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    rx, kx, vx = _top_directions(Xc, var_threshold, k)
    ry, ky, vy = _top_directions(Yc, var_threshold, k)
    n = X.shape[0]
    if max(kx, ky) >= n - 1:
        raise UniversalityError(f"svcca: {n} pairs, but the variance rule keeps {kx} and {ky} directions; a "
                                "side that spans all centred pairs makes every canonical correlation 1. "
                                "Give more pairs, a lower var_threshold or a fixed k")
    rho = canonical_correlations(rx, ry)
    used = {"k_x": kx, "k_y": ky, "var_x": vx, "var_y": vy, "paper_compat": paper_compat,
            "var_threshold": None if (k is not None) else var_threshold,
            # kx + ky directions in n - 1 centred dimensions must share some: those correlations are 1
            "saturated": kx + ky > n - 1, "correlations": rho[:8].tolist()}
    return Score("svcca", float(rho.mean()), n, used)


def _lower(M: np.ndarray) -> np.ndarray:
    return M[np.tril_indices(M.shape[0], -1)]


def _ranks(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(v)


def rsa(X, Y, max_rows: int = 2000, seed: int = 0) -> Score:
    X, Y = _pair(X, Y, 4, "rsa")
    n = X.shape[0]
    rows = np.arange(n)
    if n > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
    for name, M in (("X", X), ("Y", Y)):
        if (M[rows].std(1) == 0).any():
            raise UniversalityError(f"rsa: a row of {name} is constant, so its Pearson similarity is undefined")
    sx, sy = _lower(np.corrcoef(X[rows])), _lower(np.corrcoef(Y[rows]))
    value = float(np.corrcoef(_ranks(sx), _ranks(sy))[0, 1])
    return Score("rsa", value, n, {"rows_used": int(rows.size), "subsampled": bool(n > max_rows), "seed": seed})


def _hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al.'s unbiased HSIC of two Gram matrices, in O(n^2)."""
    n = K.shape[0]
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    ones_K, ones_L = K.sum(0), L.sum(0)
    return float((np.sum(K * L) + ones_K.sum() * ones_L.sum() / ((n - 1) * (n - 2))
                  - 2.0 / (n - 2) * ones_K @ ones_L) / (n * (n - 3)))


def linear_cka(X, Y, debiased: bool = False) -> Score:
    X, Y = _pair(X, Y, 5 if debiased else 2, "linear_cka")
    X, Y = X - X.mean(0), Y - Y.mean(0)
    if debiased:
        K, L = X @ X.T, Y @ Y.T
        xy, xx, yy = _hsic_unbiased(K, L), _hsic_unbiased(K, K), _hsic_unbiased(L, L)
    else:  # in feature space: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), O(n d^2)
        xy = float(np.sum((Y.T @ X) ** 2))
        xx, yy = float(np.sum((X.T @ X) ** 2)), float(np.sum((Y.T @ Y) ** 2))
    if xx <= 0 or yy <= 0:
        raise UniversalityError("linear_cka: one side has no variance (all matched rows are equal)")
    n = X.shape[0]
    return Score("cka_debiased" if debiased else "cka", float(xy / np.sqrt(xx * yy)), n,
                 {"debiased": debiased})


def _neighbours(M: np.ndarray, k: int) -> np.ndarray:
    norms = np.linalg.norm(M, axis=1, keepdims=True)
    U = M / np.where(norms == 0, 1, norms)
    sim = U @ U.T
    np.fill_diagonal(sim, -np.inf)  # a row is not its own neighbour
    return np.argpartition(-sim, k - 1, axis=1)[:, :k]


def mutual_knn(X, Y, k: int = 10) -> Score:
    X, Y = _pair(X, Y, 2, "mutual_knn")
    n = X.shape[0]
    if not 1 <= k < n:
        raise UniversalityError(f"mutual_knn: k={k} neighbours needs 1 <= k < the {n} pairs")
    nx, ny = _neighbours(X, k), _neighbours(Y, k)
    shared = np.array([len(set(a) & set(b)) for a, b in zip(nx.tolist(), ny.tolist())])
    jaccard = shared / (2 * k - shared)
    return Score("mutual_knn", float(shared.mean() / k), n,
                 {"k": k, "jaccard": float(jaccard.mean()), "chance": k / (n - 1)})


def score(measure: str, X, Y, **kw) -> Score:
    """One of ``MEASURES`` by name (``kw`` goes to that measure)."""
    if measure == "svcca":
        return svcca(X, Y, **kw)
    if measure == "rsa":
        return rsa(X, Y, **kw)
    if measure in ("cka", "cka_debiased"):
        return linear_cka(X, Y, debiased=measure == "cka_debiased")
    if measure == "mutual_knn":
        return mutual_knn(X, Y, **kw)
    raise UniversalityError(f"measure {measure!r}; choose one of {', '.join(MEASURES)}")
