"""Semantic subspaces: the matched pairs whose features are about one topic, scored on their own.

A pair joins a keyword group when a top activation of its A feature or of its B feature reads as
one of the group's words (case-insensitive): the word its token belongs to in its document
(``words``; on a byte-level BPE the piece 'anuary' of " January" reads as "January"), which the job
stores beside the top tokens. Results stored before the words were (``job.REVISION`` < 5) fall back
to the top tokens themselves, which is the same on a word-level tokenizer.

Within each group the measures are compared with two nulls: the group's own pairing shuffled, and
random sets of as many matched pairs drawn from all of them (is this topic more alike across
models than matched features in general?).

The groups come from ``keyword_groups`` (the zoo's, the paper's eight categories, or a user's
file). This is this project's procedure; ``concepts`` has the authors' (concept features found in
each model apart, then paired within the group).
"""
from __future__ import annotations

import numpy as np

from sae_core.universality import nulls
from sae_core.universality.analysis import MIN_PAIRS, SMALL_PAIRS, AnalysisConfig
from sae_core.universality.measures import UniversalityError

SUBSPACE_MEASURES = ("svcca", "rsa")


def top_words(pair: dict) -> set[str]:
    """A pair's top activations on both sides as words, stripped and lower-case: its stored
    ``words_a``/``words_b``, or in an older result its top tokens (module doc)."""
    both = pair.get("words_a", pair["top_a"]) + pair.get("words_b", pair["top_b"])
    return {w.strip().lower() for w in both}


def members(pairs: list[dict], words: tuple[str, ...]) -> np.ndarray:
    """Indices of the pairs with a top word (either side) among ``words`` (case-insensitive)."""
    wanted = {w.lower() for w in words}
    return np.array([i for i, p in enumerate(pairs) if wanted & top_words(p)], dtype=np.int64)


def subspace_scores(X: np.ndarray, Y: np.ndarray, pairs: list[dict], groups: dict[str, tuple[str, ...]],
                    cfg: AnalysisConfig = AnalysisConfig(), *, measures: tuple[str, ...] = SUBSPACE_MEASURES,
                    strict: bool = False) -> dict:
    """Per group: its pairs and, when there are enough, each measure against both nulls. ``X``,
    ``Y``: the matched decoder rows, row i for ``pairs[i]``. ``strict``: a group that matches no
    pair is an error (for groups a user asked for by name) rather than a note."""
    out = {}
    for name, words in groups.items():
        idx = members(pairs, words)
        if strict and idx.size == 0:
            raise UniversalityError(f"keyword group {name!r} matches no matched feature (no top word among "
                                    f"{', '.join(words[:8])}{', ...' if len(words) > 8 else ''}); check the words "
                                    "against the tokenizer's spelling, or use more tokens or pairs")
        g = {"n_pairs": int(idx.size), "words": list(words), "scores": {}}
        if idx.size < MIN_PAIRS:
            g["note"] = f"{idx.size} pair(s): fewer than the {MIN_PAIRS} the measures need"
            out[name] = g
            continue
        runs = cfg.runs_small if idx.size <= SMALL_PAIRS else cfg.runs
        for m in measures:
            f = cfg.measure(m)
            try:
                s = f(X[idx], Y[idx])
                shuffled = nulls.shuffled(f, X[idx], Y[idx], s.value, runs=runs, seed=cfg.seed)
                rng = np.random.default_rng(cfg.seed + 1)
                sx, sy = f.prepare(X), f.prepare(Y)
                others = [f.compare(f.take(sx, r), f.take(sy, r)).value
                          for r in (rng.choice(len(pairs), idx.size, replace=False) for _ in range(runs))]
            except UniversalityError as e:
                g["scores"][m] = {"error": str(e)}
                continue
            g["scores"][m] = {"value": s.value, "used": s.used, "shuffled": shuffled.to_json(),
                              "matched_subsets": nulls.significance(s.value, others, "matched subsets").to_json()}
        out[name] = g
    return out
