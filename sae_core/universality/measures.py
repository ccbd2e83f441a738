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
from sae_core.universality.hsic import GRAM_ENTRY_IN_MACS, Centred, Gram, hsic_centred, hsic_gram

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
    """A measure over an n x n matrix of the rows (similarity or Gram), kept up to ``CACHE_ROWS``
    rows; each measure's ``take`` reuses it for the rows taken."""

    def matrix(self, M: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, M) -> State:
        M = _check(_np(M), self.least, self.name)
        return State(M, self.matrix(M) if M.shape[0] <= CACHE_ROWS else None)

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
    """``derived``: ``(sim, idx, ranks)``: the similarity matrix of the prepared rows, which of
    them this state's rows are (None: all, in order), and the ranks this state compares (computed
    once for a prepared side, which a shuffled null compares a hundred times). ``take`` only
    composes indices, so a null run gathers the ``max_rows`` sub-block it ranks, not all n x n."""
    max_rows: int = 2000
    seed: int = 0
    name = "rsa"
    least = 4

    def matrix(self, M: np.ndarray) -> np.ndarray:
        if (M.std(1) == 0).any():
            raise UniversalityError("rsa: a matched row is constant, so its Pearson similarity is undefined")
        return np.corrcoef(M)

    def prepare(self, M) -> State:
        s = super().prepare(M)
        if s.derived is None:
            return s
        return replace(s, derived=(s.derived, None, self._ranks(s.derived, None, s.M.shape[0])))

    def take(self, s: State, rows: np.ndarray) -> State:
        if s.derived is None:
            return self.prepare(s.M[rows])
        sim, idx, _ = s.derived
        return State(s.M[rows], (sim, rows if idx is None else idx[rows], None))

    def _rows(self, n: int) -> np.ndarray:
        if n > self.max_rows:
            return np.sort(np.random.default_rng(self.seed).choice(n, self.max_rows, replace=False))
        return np.arange(n)

    def _ranks(self, sim: np.ndarray, idx: np.ndarray | None, n: int) -> np.ndarray:
        rows = self._rows(n)
        base = rows if idx is None else idx[rows]
        return _ranks(sim[np.ix_(base, base)][np.tril_indices(rows.size, -1)])

    def _ranks_of(self, s: State) -> np.ndarray:
        n = s.M.shape[0]
        if s.derived is None:
            rows = self._rows(n)
            return _ranks(_lower(self.matrix(s.M[rows])))
        sim, idx, ranks = s.derived
        return ranks if ranks is not None else self._ranks(sim, idx, n)

    def compare(self, sx: State, sy: State) -> Score:
        n = sx.M.shape[0]
        value = float(np.corrcoef(self._ranks_of(sx), self._ranks_of(sy))[0, 1])
        used = min(n, self.max_rows)
        return Score("rsa", value, n, {"rows_used": int(used), "subsampled": bool(n > self.max_rows),
                                       "seed": self.seed})


@dataclass(frozen=True)
class CKA(Measure):
    """``derived``: a dict of the forms computed so far for this side: ``"centred"`` (feature
    space, the usual choice) and ``"gram"`` (n x n, chosen for rows much wider than they are many),
    filled when a comparison first needs one; a permutation reorders them, a subset starts over."""
    debiased: bool = False

    @property
    def name(self) -> str:  # type: ignore[override]
        return "cka_debiased" if self.debiased else "cka"

    @property
    def least(self) -> int:  # type: ignore[override]
        return 5 if self.debiased else 2

    def prepare(self, M) -> State:
        """Computes the form its own width suggests at once, so permuted takes reuse it."""
        s = State(_check(_np(M), self.least, self.name), {})
        n, d = s.M.shape
        self._form(s, "centred" if d * d <= GRAM_ENTRY_IN_MACS * n else "gram")
        return s

    def take(self, s: State, rows: np.ndarray) -> State:
        if _is_permutation(rows, s.M.shape[0]):
            return State(s.M[rows], {k: v.permuted(rows) for k, v in s.derived.items()})
        return State(s.M[rows], {})

    @staticmethod
    def _form(s: State, kind: str):
        if kind not in s.derived:
            s.derived[kind] = Centred.of(s.M) if kind == "centred" else Gram.of(s.M @ s.M.T)
        return s.derived[kind]

    def compare(self, sx: State, sy: State) -> Score:
        n = sx.M.shape[0]
        centred = sx.M.shape[1] * sy.M.shape[1] <= GRAM_ENTRY_IN_MACS * n
        hsic = hsic_centred if centred else hsic_gram
        g, h = (self._form(s, "centred" if centred else "gram") for s in (sx, sy))
        xy, xx, yy = (hsic(p, q, self.debiased) for p, q in ((g, h), (g, g), (h, h)))
        if xx <= 1e-12 * g.self_dot or yy <= 1e-12 * h.self_dot:  # zero, up to the sums' rounding
            raise UniversalityError("linear_cka: one side has no variance (all matched rows are equal)")
        return Score(self.name, float(xy / np.sqrt(xx * yy)), n, {"debiased": self.debiased})


@dataclass(frozen=True)
class MutualKNN(_RowPairs):
    """``derived`` of a prepared side: ``(sim, nb, order)``: cosine similarities, each row's k
    neighbours, and each row's nearest ``prefix * k`` rows, nearest first. A subset's neighbours
    are then the first k members of the subset in that order (the exact answer; rows with fewer
    than k members in their prefix are computed from ``sim``), with no sub-block copied or
    partitioned. A taken state keeps only its neighbours."""
    k: int = 10
    prefix: int = 8
    name = "mutual_knn"

    def matrix(self, M: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(M, axis=1, keepdims=True)
        U = M / np.where(norms == 0, 1, norms)
        sim = U @ U.T
        np.fill_diagonal(sim, -np.inf)  # a row is not its own neighbour
        return sim

    def prepare(self, M) -> State:
        s = super().prepare(M)
        if s.derived is None:
            return s
        sim = s.derived
        length = min(sim.shape[0] - 1, self.prefix * self.k)
        near = np.argpartition(-sim, length - 1, axis=1)[:, :length]
        order = np.take_along_axis(near, np.argsort(-np.take_along_axis(sim, near, 1), axis=1), 1)
        return replace(s, derived=(sim, self._neighbours(sim), order))

    def take(self, s: State, rows: np.ndarray) -> State:
        if s.derived is None or s.derived[0] is None:  # unprepared, or already a taken state
            return self.prepare(s.M[rows])
        sim, nb, order = s.derived
        n = s.M.shape[0]
        pos = np.full(n, -1)
        pos[rows] = np.arange(rows.size)
        if _is_permutation(rows, n):  # neighbours of row i in M[rows]: pos[nb[rows[i]]]
            return State(s.M[rows], (None, pos[nb[rows]], None))
        if np.unique(rows).size != rows.size:  # repeated rows: from the sub-block
            return State(s.M[rows], (None, self._neighbours(sim[np.ix_(rows, rows)]), None))
        self._check_k(rows.size)
        member = pos[order[rows]] >= 0                 # [m, prefix]: the prefix's rows in the subset
        seen = np.cumsum(member, 1)
        first = member & (seen <= self.k)
        out = np.empty((rows.size, self.k), dtype=np.int64)
        full = seen[:, -1] >= self.k
        out[full] = pos[order[rows[full]]][first[full]].reshape(-1, self.k)
        if not full.all():                             # too few subset members among the prefix
            out[~full] = self._neighbours(sim[np.ix_(rows[~full], rows)])
        return State(s.M[rows], (None, out, None))

    def _check_k(self, n: int) -> None:
        if not 1 <= self.k < n:
            raise UniversalityError(f"mutual_knn: k={self.k} neighbours needs 1 <= k < the {n} pairs")

    def _neighbours(self, sim: np.ndarray) -> np.ndarray:
        """Each row's k largest entries of ``sim`` (rows: points, columns: candidates; a point's
        own column holds -inf)."""
        self._check_k(sim.shape[1])
        return np.argpartition(-sim, self.k - 1, axis=1)[:, :self.k]

    def compare(self, sx: State, sy: State) -> Score:
        nx, ny = (s.derived[1] if s.derived is not None else self._neighbours(self.matrix(s.M)) for s in (sx, sy))
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
