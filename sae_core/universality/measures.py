"""Similarity of two matched spaces: measures over two matrices whose row i in one is paired with
row i in the other (matched SAE decoder rows: features as data points).

- ``svcca(X, Y)``: centre each, keep the top principal directions (enough for ``var_threshold`` of
  the variance, or a fixed ``k``), CCA between the two reduced spaces, mean canonical correlation.
  ``paper_compat=True`` keeps one direction per side, as the code of arXiv 2410.06981 did (its
  variance test stopped after the first), so the value is |corr| of the first principal scores.
- ``rsa(X, Y)``: each side's row-by-row Pearson similarity matrix, then the Spearman correlation
  of their lower triangles (on ``max_rows`` rows drawn with ``seed`` when there are more).
- ``linear_cka(X, Y, debiased=False)``: linear CKA (Kornblith et al. 2019); ``debiased`` uses the
  unbiased HSIC estimator (Song et al. 2012), which is near 0 for independent data at any n.
- ``mutual_knn(X, Y, k)``: for every row, its k nearest rows by cosine in each space; the mean
  fraction of neighbours the two sets share (and their Jaccard index, as the paper's code scored).

Each returns a ``Score``: the value and what it used. Inputs are float64 numpy (torch is accepted).

Each measure is also a ``Measure`` object with ``prepare(M)`` (one side's reusable state: its
SVD, Gram, similarity or neighbour matrix), ``take(state, rows)`` (the state of ``M[rows]``) and
``compare(state_x, state_y)``. Nulls draw hundreds of row permutations and subsets: ``take``
turns each into cheap indexing (a permutation only reorders a Gram matrix or a neighbour table),
so a null run costs a fraction of a fresh measure. ``compare(take(prepare(X), r), ...)`` equals
the measure of ``X[r]``: a test holds every measure to it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from sae_core.errors import SAECoreError

MEASURES = ("svcca", "rsa", "cka", "cka_debiased", "mutual_knn")
CACHE_ROWS = 4096  # a state keeps n x n matrices up to this many rows (128 MiB each in float64)


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


def _check(X: np.ndarray, least: int, what: str) -> np.ndarray:
    if X.ndim != 2:
        raise UniversalityError(f"{what} takes 2-D matrices (rows: matched pairs); got shape {X.shape}")
    if X.shape[0] < least:
        raise UniversalityError(f"{what} needs at least {least} matched pairs; got {X.shape[0]}. Keep more "
                                "pairs (lower the correlation threshold, drop filters) or use more tokens")
    if not np.isfinite(X).all():
        raise UniversalityError(f"{what}: the inputs hold NaN or infinite values")
    return X


def _same_rows(nx: int, ny: int, what: str) -> None:
    if nx != ny:
        raise UniversalityError(f"{what}: {nx} rows against {ny}; row i of each must be one matched pair, so "
                                "both need the same number of rows")


def _is_permutation(rows: np.ndarray, n: int) -> bool:
    return rows.size == n and np.array_equal(np.sort(rows), np.arange(n))


@dataclass(frozen=True)
class State:
    """One side, prepared: its rows and whatever the measure derived from them."""
    M: np.ndarray
    derived: object = None   # measure-specific (reduced basis, Gram, similarity, neighbours)


class Measure:
    name = ""
    least = 2

    def prepare(self, M) -> State:
        return State(_check(_np(M), self.least, self.name))

    def take(self, s: State, rows: np.ndarray) -> State:
        """The state of ``s.M[rows]``: the base case recomputes; measures override with indexing."""
        return self.prepare(s.M[rows])

    def compare(self, sx: State, sy: State) -> Score:
        raise NotImplementedError

    def __call__(self, X, Y) -> Score:
        X, Y = _np(X), _np(Y)
        if X.ndim == 2 and Y.ndim == 2:
            _same_rows(X.shape[0], Y.shape[0], self.name)
        return self.compare(self.prepare(X), self.prepare(Y))


# --- SVCCA ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SVCCA(Measure):
    var_threshold: float = 0.99
    k: int | None = None
    paper_compat: bool = False
    name = "svcca"
    least = 3

    def __post_init__(self):
        if not 0 < self.var_threshold <= 1:
            raise UniversalityError(f"var_threshold={self.var_threshold}: give a fraction of variance in (0, 1]")
        if self.k is not None and self.k < 1:
            raise UniversalityError(f"k={self.k}: keep at least one direction (or None for the variance rule)")

    def prepare(self, M) -> State:
        """The kept principal directions' orthonormal row scores ``U_k`` (their span is the reduced
        space CCA compares), the k kept and the variance they hold."""
        M = _check(_np(M), self.least, self.name)
        U, S, _ = np.linalg.svd(M - M.mean(0), full_matrices=False)
        var = S ** 2
        total = var.sum()
        if total == 0:
            raise UniversalityError("svcca: one side has no variance (all matched rows are equal)")
        rank = int((S > S[0] * max(M.shape) * np.finfo(float).eps).sum())
        k = 1 if self.paper_compat else self.k
        if k is None:
            k = int(np.searchsorted(np.cumsum(var) / total, self.var_threshold - 1e-12) + 1)
        k = min(k, rank)
        return State(M, (U[:, :k], k, float(var[:k].sum() / total)))

    def take(self, s: State, rows: np.ndarray) -> State:
        if _is_permutation(rows, s.M.shape[0]):  # reordering rows reorders U and keeps the spectrum
            U, k, v = s.derived
            return State(s.M[rows], (U[rows], k, v))
        return self.prepare(s.M[rows])

    def compare(self, sx: State, sy: State) -> Score:
        (Ux, kx, vx), (Uy, ky, vy) = sx.derived, sy.derived
        n = Ux.shape[0]
        if max(kx, ky) >= n - 1:
            raise UniversalityError(f"svcca: {n} pairs, but the variance rule keeps {kx} and {ky} directions; a "
                                    "side that spans all centred pairs makes every canonical correlation 1. "
                                    "Give more pairs, a lower var_threshold or a fixed k")
        rho = np.clip(np.linalg.svd(Ux.T @ Uy, compute_uv=False), 0.0, 1.0)
        used = {"k_x": kx, "k_y": ky, "var_x": vx, "var_y": vy, "paper_compat": self.paper_compat,
                "var_threshold": None if (self.k is not None or self.paper_compat) else self.var_threshold,
                # kx + ky directions in n - 1 centred dimensions must share some: those correlations are 1
                "saturated": kx + ky > n - 1, "correlations": rho[:8].tolist()}
        return Score("svcca", float(rho.mean()), n, used)


# --- matrices of all row pairs (RSA, CKA, kNN) -----------------------------------------------------

class _RowPairs(Measure):
    """A measure over an n x n matrix of the rows (similarity or Gram): ``take`` is a sub-block."""

    def matrix(self, M: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, M) -> State:
        M = _check(_np(M), self.least, self.name)
        return State(M, self.matrix(M) if M.shape[0] <= CACHE_ROWS else None)

    def take(self, s: State, rows: np.ndarray) -> State:
        if s.derived is None:
            return self.prepare(s.M[rows])
        return State(s.M[rows], s.derived[np.ix_(rows, rows)])

    def _matrix(self, s: State) -> np.ndarray:
        return s.derived if s.derived is not None else self.matrix(s.M)


def _lower(M: np.ndarray) -> np.ndarray:
    return M[np.tril_indices(M.shape[0], -1)]


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 by one argsort (Pearson similarities of real rows practically never tie; tied
    values get distinct neighbouring ranks, a negligible difference from average ranks)."""
    out = np.empty(v.size)
    out[np.argsort(v, kind="stable")] = np.arange(v.size)
    return out


@dataclass(frozen=True)
class RSA(_RowPairs):
    max_rows: int = 2000
    seed: int = 0
    name = "rsa"
    least = 4

    def matrix(self, M: np.ndarray) -> np.ndarray:
        if (M.std(1) == 0).any():
            raise UniversalityError("rsa: a matched row is constant, so its Pearson similarity is undefined")
        return np.corrcoef(M)

    def compare(self, sx: State, sy: State) -> Score:
        n = sx.M.shape[0]
        rows = np.arange(n)
        if n > self.max_rows:
            rows = np.sort(np.random.default_rng(self.seed).choice(n, self.max_rows, replace=False))
        tri = np.tril_indices(rows.size, -1)
        sub = [(self._matrix(s)[np.ix_(rows, rows)] if s.derived is not None else self.matrix(s.M[rows]))[tri]
               for s in (sx, sy)]
        value = float(np.corrcoef(_ranks(sub[0]), _ranks(sub[1]))[0, 1])
        return Score("rsa", value, n, {"rows_used": int(rows.size), "subsampled": bool(n > self.max_rows),
                                       "seed": self.seed})


def _hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al.'s unbiased HSIC of two Gram matrices, in O(n^2) (translation invariant, so the
    Gram of uncentred rows serves)."""
    n = K.shape[0]
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    ones_K, ones_L = K.sum(0), L.sum(0)
    return float((np.sum(K * L) + ones_K.sum() * ones_L.sum() / ((n - 1) * (n - 2))
                  - 2.0 / (n - 2) * ones_K @ ones_L) / (n * (n - 3)))


def _centred(G: np.ndarray) -> np.ndarray:
    """H G H for the centring matrix H: the Gram of the centred rows."""
    r = G.mean(0)
    return G - r[None, :] - r[:, None] + r.mean()


@dataclass(frozen=True)
class CKA(_RowPairs):
    debiased: bool = False

    @property
    def name(self) -> str:  # type: ignore[override]
        return "cka_debiased" if self.debiased else "cka"

    @property
    def least(self) -> int:  # type: ignore[override]
        return 5 if self.debiased else 2

    def matrix(self, M: np.ndarray) -> np.ndarray:
        return M @ M.T

    def compare(self, sx: State, sy: State) -> Score:
        K, L = self._matrix(sx), self._matrix(sy)
        if self.debiased:
            xy, xx, yy = _hsic_unbiased(K, L), _hsic_unbiased(K, K), _hsic_unbiased(L, L)
        else:
            Kc, Lc = _centred(K), _centred(L)
            xy, xx, yy = float(np.sum(Kc * Lc)), float(np.sum(Kc * Kc)), float(np.sum(Lc * Lc))
        if xx <= 0 or yy <= 0:
            raise UniversalityError("linear_cka: one side has no variance (all matched rows are equal)")
        return Score(self.name, float(xy / np.sqrt(xx * yy)), K.shape[0], {"debiased": self.debiased})


@dataclass(frozen=True)
class MutualKNN(_RowPairs):
    k: int = 10
    name = "mutual_knn"

    def matrix(self, M: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(M, axis=1, keepdims=True)
        U = M / np.where(norms == 0, 1, norms)
        sim = U @ U.T
        np.fill_diagonal(sim, -np.inf)  # a row is not its own neighbour
        return sim

    def prepare(self, M) -> State:
        s = super().prepare(M)
        return replace(s, derived=(s.derived, self._neighbours(s))) if s.derived is not None else s

    def take(self, s: State, rows: np.ndarray) -> State:
        if s.derived is None:
            return self.prepare(s.M[rows])
        sim, nb = s.derived
        if sim is None:  # already a reordered state
            return self.prepare(s.M[rows])
        if _is_permutation(rows, s.M.shape[0]):  # neighbours of row i in M[rows]: inv[nb[rows[i]]]
            inv = np.empty_like(rows)
            inv[rows] = np.arange(rows.size)
            return State(s.M[rows], (None, inv[nb[rows]]))
        sub = State(s.M[rows], sim[np.ix_(rows, rows)])
        return State(sub.M, (sub.derived, self._neighbours(sub)))

    def _neighbours(self, s: State) -> np.ndarray:
        sim = s.derived if s.derived is not None else self.matrix(s.M)
        n = sim.shape[0]
        if not 1 <= self.k < n:
            raise UniversalityError(f"mutual_knn: k={self.k} neighbours needs 1 <= k < the {n} pairs")
        return np.argpartition(-sim, self.k - 1, axis=1)[:, :self.k]

    def compare(self, sx: State, sy: State) -> Score:
        nx, ny = (s.derived[1] if isinstance(s.derived, tuple) else self._neighbours(s) for s in (sx, sy))
        n = nx.shape[0]
        shared = (np.sort(nx, 1)[:, :, None] == np.sort(ny, 1)[:, None, :]).sum((1, 2))
        jaccard = shared / (2 * self.k - shared)
        return Score("mutual_knn", float(shared.mean() / self.k), n,
                     {"k": self.k, "jaccard": float(jaccard.mean()), "chance": self.k / (n - 1)})


# --- the functions ---------------------------------------------------------------------------------

def svcca(X, Y, var_threshold: float = 0.99, k: int | None = None, paper_compat: bool = False) -> Score:
    return SVCCA(var_threshold, k, paper_compat)(X, Y)


def rsa(X, Y, max_rows: int = 2000, seed: int = 0) -> Score:
    return RSA(max_rows, seed)(X, Y)


def linear_cka(X, Y, debiased: bool = False) -> Score:
    return CKA(debiased)(X, Y)


def mutual_knn(X, Y, k: int = 10) -> Score:
    return MutualKNN(k)(X, Y)


def measure(name: str, **kw) -> Measure:
    """One of ``MEASURES`` by name (``kw``: that measure's settings)."""
    if name == "svcca":
        return SVCCA(**kw)
    if name == "rsa":
        return RSA(**kw)
    if name in ("cka", "cka_debiased"):
        return CKA(debiased=name == "cka_debiased")
    if name == "mutual_knn":
        return MutualKNN(**kw)
    raise UniversalityError(f"measure {name!r}; choose one of {', '.join(MEASURES)}")


def score(name: str, X, Y, **kw) -> Score:
    return measure(name, **kw)(X, Y)
