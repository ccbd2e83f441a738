"""Pair B's features with A's from their correlation matrix, then filter the pairs.

Rules (``MatchConfig.rule``):
- ``many_to_one`` (the paper's): each B feature's partner is the A feature it correlates with
  most; several B features may share one A feature;
- ``mutual``: only pairs that are each other's best (mutual nearest neighbours);
- ``hungarian``: a one-to-one assignment maximising the summed correlation
  (``scipy.optimize.linear_sum_assignment``).

Filters, each recorded with the pairs it leaves (``Matches.steps``):
1. ``drop_nonconcept``: drop a pair when either side's top tokens include a "non-concept" token:
   under ``nonconcept_list="no_alnum"`` (this project's default) any special token or token with no
   letter or digit (``nonconcept_ids``); under ``"authors"`` exactly the authors' 12 strings
   (``AUTHORS_NONCONCEPT``, wlg1/univ_feat_geom ``getScores_pythia.py:run_expm``'s ``junk_words``),
   compared with the decoded top tokens;
2. ``shared_token``: keep a pair only if its two top-token sets share a token;
3. ``min_corr``: keep pairs with correlation above it (0.1);
4. ``dedupe`` (after ``many_to_one``): one pair per A feature, ``best`` keeping its most
   correlated B partner, or ``first`` keeping the lowest-numbered B feature, as the authors' code
   did (``run_expm``'s ``oneToOne_bool``: the first pair seen, in B order).

``order="default"`` applies them in that order; ``order="paper"`` as the authors' ``run_expm``:
the token filters (1, 2), then the one-to-one filter (4), then the correlation threshold (3), so
a pair dropped by the threshold can have taken its A feature's one place.

Dead features (never varying) are never matched.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from sae_core.universality.correlation import Correlation
from sae_core.universality.measures import UniversalityError

RULES = ("many_to_one", "mutual", "hungarian")
DEDUPE = ("none", "best", "first")
ORDERS = ("default", "paper")
NONCONCEPT_LISTS = ("no_alnum", "authors")
# wlg1/univ_feat_geom, _old_code/nbs_as_py/_main_results/getScores_pythia.py, run_expm: junk_words
AUTHORS_NONCONCEPT = frozenset(['.', '\\n', '\n', '', ' ', '-', '<bos>', ',', '!', '?', '<|endoftext|>', '|bos|'])


@dataclass(frozen=True)
class MatchConfig:
    rule: str = field(default="many_to_one", metadata={"help": "many_to_one (the paper's) | mutual | hungarian."})
    min_corr: float = field(default=0.1, metadata={"help": "Keep pairs correlated above this."})
    drop_nonconcept: bool = field(default=True, metadata={
        "help": "Drop pairs whose top tokens include punctuation or specials."})
    shared_token: bool = field(default=True, metadata={"help": "Keep pairs whose top tokens share one."})
    dedupe: str = field(default="none", metadata={"help": "many_to_one only: none | best | first (the authors')."})
    order: str = field(default="default", metadata={
        "help": "default: token filters, correlation, one-to-one | paper: one-to-one before the correlation "
                "threshold, as the authors' code."})
    nonconcept_list: str = field(default="no_alnum", metadata={
        "help": "Non-concept tokens: no_alnum (specials and tokens with no letter or digit) | authors (their "
                "12 strings)."})

    def __post_init__(self):
        if self.rule not in RULES:
            raise UniversalityError(f"matching rule {self.rule!r}; choose one of {', '.join(RULES)}")
        if self.dedupe not in DEDUPE:
            raise UniversalityError(f"dedupe {self.dedupe!r}; choose one of {', '.join(DEDUPE)}")
        if self.dedupe != "none" and self.rule != "many_to_one":
            raise UniversalityError(f"dedupe={self.dedupe!r} applies to the many_to_one rule; {self.rule} "
                                    "pairs are one-to-one already")
        if self.order not in ORDERS:
            raise UniversalityError(f"order {self.order!r}; choose one of {', '.join(ORDERS)}")
        if self.nonconcept_list not in NONCONCEPT_LISTS:
            raise UniversalityError(f"nonconcept_list {self.nonconcept_list!r}; choose one of "
                                    f"{', '.join(NONCONCEPT_LISTS)}")
        if not -1 <= self.min_corr < 1:
            raise UniversalityError(f"min_corr={self.min_corr}: give a correlation in [-1, 1)")

    @property
    def label(self) -> str:
        extra = {"best": ", one-to-one (best pair kept)",
                 "first": ", one-to-one (first pair kept, as the authors' code)"}.get(self.dedupe, "")
        order = ", the authors' filter order" if self.order == "paper" and self.dedupe != "none" else ""
        words = ", the authors' non-concept list" if self.nonconcept_list == "authors" and self.drop_nonconcept else ""
        return f"{self.rule.replace('_', '-')}{extra}{order}{words}"

    def to_json(self) -> dict:
        return {"rule": self.rule, "min_corr": self.min_corr, "drop_nonconcept": self.drop_nonconcept,
                "shared_token": self.shared_token, "dedupe": self.dedupe, "order": self.order,
                "nonconcept_list": self.nonconcept_list}


@dataclass(frozen=True)
class Matches:
    a: np.ndarray          # [n] A feature of each pair
    b: np.ndarray          # [n] B feature of each pair
    corr: np.ndarray       # [n] their correlation
    steps: tuple[tuple[str, int], ...] = field(default=())  # (stage, pairs left after it)
    step_means: tuple[float | None, ...] = field(default=())  # the mean correlation of those pairs (the
    # authors' mean_actv_corr after the rule, mean_actv_corr_filt at the end); None when none is left

    def __len__(self) -> int:
        return int(self.a.size)


def nonconcept_ids(tokenizer) -> set[int]:
    """Token ids that carry no concept: special tokens, and tokens of punctuation or white space only."""
    out = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i])
        if not any(ch.isalnum() for ch in text):
            out.add(i)
    return out


def _candidates(corr: torch.Tensor, alive_a: torch.Tensor, alive_b: torch.Tensor, rule: str):
    C = corr.clone()
    C[~alive_a] = -2.0
    C[:, ~alive_b] = -2.0
    if rule == "hungarian":
        from scipy.optimize import linear_sum_assignment

        ra, rb = linear_sum_assignment(C.double().numpy(), maximize=True)
        a, b = np.asarray(ra), np.asarray(rb)
    else:
        best_a = C.argmax(0).numpy()                 # per B feature
        b = np.arange(C.shape[1])
        a = best_a
        if rule == "mutual":
            best_b = C.argmax(1).numpy()             # per A feature
            keep = best_b[a] == b
            a, b = a[keep], b[keep]
    c = corr[a, b].numpy()
    alive = alive_a.numpy()[a] & alive_b.numpy()[b]
    return a[alive], b[alive], c[alive]


def match(correlation: Correlation, cfg: MatchConfig = MatchConfig(), *, top_a: list[set[int]] | None = None,
          top_b: list[set[int]] | None = None, nonconcept: set[int] = frozenset()) -> Matches:
    """Pairs of (A feature, B feature) under ``cfg`` (module doc). ``top_a``/``top_b``: each
    feature's top-token set, needed by the token filters, as token ids or as decoded strings (the
    authors compare strings); ``nonconcept`` of the same kind."""
    if (cfg.drop_nonconcept or cfg.shared_token) and (top_a is None or top_b is None):
        raise UniversalityError("the non-concept and shared-token filters need each feature's top tokens "
                                "(top_a, top_b); pass them or turn those filters off")
    a, b, c = _candidates(correlation.corr, correlation.alive_a, correlation.alive_b, cfg.rule)
    steps, means = [(cfg.rule.replace("_", "-"), int(a.size))], [_mean(c)]

    def keep(mask, stage):
        nonlocal a, b, c
        a, b, c = a[mask], b[mask], c[mask]
        steps.append((stage, int(a.size)))
        means.append(_mean(c))

    if cfg.drop_nonconcept:
        keep(np.array([not (top_a[i] & nonconcept) and not (top_b[j] & nonconcept) for i, j in zip(a, b)],
                      dtype=bool), "no non-concept top token")
    if cfg.shared_token:
        keep(np.array([bool(top_a[i] & top_b[j]) for i, j in zip(a, b)], dtype=bool), "a shared top token")
    def one_to_one():
        order = np.argsort(-c, kind="stable") if cfg.dedupe == "best" else np.argsort(b, kind="stable")
        _, first = np.unique(a[order], return_index=True)
        mask = np.zeros(a.size, dtype=bool)
        mask[order[first]] = True
        keep(mask, f"one per A feature ({cfg.dedupe})")

    if cfg.dedupe != "none" and cfg.order == "paper":
        one_to_one()
    keep(c > cfg.min_corr, f"correlation > {cfg.min_corr:g}")
    if cfg.dedupe != "none" and cfg.order == "default":
        one_to_one()
    return Matches(a.astype(np.int64), b.astype(np.int64), c.astype(np.float64), tuple(steps), tuple(means))


def _mean(c: np.ndarray) -> float | None:
    return float(c.mean()) if c.size else None
