"""The HSIC estimators behind linear CKA, in the two forms a comparison can take.

- ``Gram``: an n x n Gram matrix with its diagonal, row sums, total and self product;
  ``hsic_gram`` is the biased HSIC (centred alignment) or Song et al.'s unbiased estimator from those.
- ``Centred``: the centred rows themselves; ``hsic_centred`` gives the same values from
  ``||Xc^T Yc||^2`` and the squared row norms, in ``n d_x d_y`` multiply-adds and no n x n matrix.

``measures.CKA`` picks the form per comparison (``GRAM_ENTRY_IN_MACS``); a test holds them equal.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Gram:
    """A Gram matrix with the sums CKA's HSIC estimators need, so that a comparison costs one
    elementwise product of the two Grams (``cross``) and no centred copies."""
    K: np.ndarray
    diag: np.ndarray
    sums: np.ndarray   # row sums (= column sums)
    total: float
    self_dot: float    # sum(K * K)

    @classmethod
    def of(cls, K: np.ndarray) -> "Gram":
        K = np.ascontiguousarray(K)
        return cls(K, np.diag(K).copy(), K.sum(0), float(K.sum()), float(K.ravel() @ K.ravel()))

    def permuted(self, rows: np.ndarray) -> "Gram":
        return Gram(self.K[rows][:, rows], self.diag[rows], self.sums[rows], self.total, self.self_dot)

    def cross(self, other: "Gram") -> float:
        return self.self_dot if other is self else float(self.K.ravel() @ other.K.ravel())


def hsic_gram(g: Gram, h: Gram, debiased: bool) -> float:
    """HSIC of two Grams up to a factor common to all three terms of CKA. Biased: <HKH, HLH> =
    <K, L> - 2/n s_K.s_L + T_K T_L / n^2 (H the centring matrix, s row sums, T totals). Debiased:
    Song et al.'s unbiased estimator of the Grams with zeroed diagonals, in O(n^2) (translation
    invariant, so the Gram of uncentred rows serves)."""
    n, kl = g.K.shape[0], g.cross(h)
    if not debiased:
        return kl - 2.0 / n * float(g.sums @ h.sums) + g.total * h.total / n ** 2
    sg, sh = g.sums - g.diag, h.sums - h.diag
    tg, th = g.total - g.diag.sum(), h.total - h.diag.sum()
    return ((kl - float(g.diag @ h.diag)) + tg * th / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(sg @ sh)) \
        / (n * (n - 3))


@dataclass(frozen=True)
class Centred:
    """One side's centred rows ``Xc`` with the sums CKA needs in feature space: HSIC terms become
    ``||Xc^T Yc||_F^2`` (``n d_x d_y`` multiply-adds) instead of sums over two n x n Grams."""
    Xc: np.ndarray
    sq: np.ndarray      # squared row norms (the Gram's diagonal)
    self_dot: float     # ||Xc^T Xc||_F^2 (= sum of the squared centred Gram)

    @classmethod
    def of(cls, M: np.ndarray) -> "Centred":
        Xc = M - M.mean(0)
        G = Xc.T @ Xc
        return cls(Xc, np.einsum("ij,ij->i", Xc, Xc), float(np.sum(G * G)))

    def permuted(self, rows: np.ndarray) -> "Centred":
        return Centred(self.Xc[rows], self.sq[rows], self.self_dot)

    def cross(self, other: "Centred") -> float:
        return self.self_dot if other is self else float(np.sum((self.Xc.T @ other.Xc) ** 2))


def hsic_centred(f: Centred, g: Centred, debiased: bool) -> float:
    """``hsic_gram`` of centred rows: their Gram's row sums and total are 0, which leaves (debiased)
    ``<K, L> - (1 + 2/(n-2)) d_K.d_L + sum(d_K) sum(d_L) / ((n-1)(n-2))`` over ``n(n-3)``."""
    kl = f.cross(g)
    if not debiased:
        return kl
    n = f.Xc.shape[0]
    dd = float(f.sq @ g.sq)
    return (kl - (1 + 2.0 / (n - 2)) * dd + f.sq.sum() * g.sq.sum() / ((n - 1) * (n - 2))) / (n * (n - 3))


# A comparison reads each Gram entry gathered for the rows taken: about as costly as this many
# multiply-adds of the feature-space product (measured: gathering 1196 x 1196 of 4096 x 4096 rows
# ~60 ms against ~2 ms for a 1196 x 128 x 256 product), so CKA works in feature space unless
# d_x d_y exceeds this many times the number of rows.
GRAM_ENTRY_IN_MACS = 1000
