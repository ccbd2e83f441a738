"""Semantic subspaces as the authors computed them: concept features found in each model apart.

wlg1/univ_feat_geom, ``_old_code/nbs_as_py/_main_results/getSemanticScores_pythia.py``:
1. each feature's top activations (its top 5 rows, ranked by the ReLU pre-activations there) each
   with a window of the tokens around it: ``store_top_seqs`` takes positions idx-2 .. idx+1 (two
   before, one after);
2. a feature is a concept feature of keyword ``kw`` when one of its top activations has a top
   token equal to ``kw`` (spaces removed, lower case) and ``kw`` is a word of that window (the
   window split at spaces, ``. , ? !`` and ``\\n`` removed, lower case):
   ``find_indices_with_keyword_bySeqs``;
3. per group, the union of its keywords' concept features in A and in B; a group with 2 or fewer on
   either side is not scored;
4. the correlation of those A features with those B features only, each B feature's best A
   partner, then one pair per A feature, the first seen in B order (``run_semantic_subspace_expms``);
   2 or fewer pairs: not scored;
5. SVCCA and RSA of the pairs' decoder rows, each against 1000 shuffles of the pairing.

Where this differs, and why: the window is decoded as one string (the authors joined per-token
decodes, which is the same for byte-level BPE; the zoo's word-level tokenizer puts spaces only
between the tokens of a sequence); features are visited in ascending order (the authors iterated
a Python set of feature ids, whose order is the ids' hash-table order); the window stays within the
token's document. No correlation threshold and no non-concept filter apply here, as in theirs.
The top "token" is the word the token belongs to (``words.TokenWords``) and the window is widened
to whole words at both ends: on a word-level tokenizer (theirs, Pythia's, is a BPE; the zoo's A
and B are word-level) that is the token and the window as they were; on a byte-level BPE a word
split into pieces (" January" = ' J' + 'anuary') is found from any of its pieces, where the
authors' check would miss it (the piece "anuary" is no word of its window).

Compare ``subspaces.subspace_scores`` (this project's default): groups of the globally matched
pairs whose A or B top token is a keyword.
"""
from __future__ import annotations

import numpy as np
import torch

from sae_core.universality import nulls
from sae_core.universality.analysis import AnalysisConfig
from sae_core.universality.contexts import doc_windows
from sae_core.universality.measures import UniversalityError
from sae_core.universality.words import TokenWords

AUTHORS_RUNS = 1000
MIN_FEATURES = 3   # the authors skip a group with <= 2 features on a side, or <= 2 pairs
CONCEPT_MEASURES = ("svcca", "rsa")
BEFORE, AFTER = 2, 1


def _word(w: str) -> str:
    for ch in (".", ",", "?", "!", "\\n"):
        w = w.replace(ch, "")
    return w.lower()


def concept_words(top_rows: torch.Tensor, token_ids: torch.Tensor, doc: torch.Tensor, tokenizer) -> list[set[str]]:
    """Per feature, the keywords (lower case) it is a concept feature of under step 2 of the module
    doc: a top activation's word that is also a word of its own window (widened to whole words).
    ``top_rows``: ``[m, S]`` store rows of each feature's top activations (-1: none); ``token_ids``,
    ``doc``: the store's token and document of every row; ``tokenizer``: the models'."""
    reader = TokenWords(tokenizer)
    out = []
    for f in range(top_rows.shape[1]):
        rows = [int(r) for r in top_rows[:, f].tolist() if r >= 0]
        found = set()
        for r, window in zip(rows, doc_windows(doc, rows, BEFORE, AFTER)):
            top = reader.word(token_ids, doc, r).replace("\n", "\\n").replace(" ", "").lower()
            lo, hi = reader.span(token_ids, doc, window[0])[0], reader.span(token_ids, doc, window[-1])[1]
            seq = tokenizer.decode([int(token_ids[j]) for j in range(lo, hi + 1)]).replace("\n", "\\n")
            if top and top in {_word(w) for w in seq.split(" ")}:
                found.add(top)
        out.append(found)
    return out


def concept_features(words: list[set[str]], keywords: tuple[str, ...]) -> list[int]:
    """The features (ascending) that are concept features of any of ``keywords``."""
    wanted = {k.replace(" ", "").lower() for k in keywords}
    return [f for f, w in enumerate(words) if w & wanted]


def first_seen_pairs(corr_AB: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's (B feature's) best row (A feature), then one pair per row, the first column
    that chose it: ``(rows, cols)`` local indices, in column order."""
    best = corr_AB.argmax(0)
    _, first = np.unique(best, return_index=True)
    cols = np.sort(first)
    return best[cols], cols


def concept_subspaces(corr: torch.Tensor, dec_a: np.ndarray, dec_b: np.ndarray, words_a: list[set[str]],
                      words_b: list[set[str]], groups: dict[str, tuple[str, ...]],
                      cfg: AnalysisConfig = AnalysisConfig(), *, runs: int = AUTHORS_RUNS) -> dict:
    """Per group, the authors' procedure (module doc): its concept features on each side, the
    pairs, and SVCCA and RSA with their shuffled nulls (``runs`` shuffles, p both as this project
    writes it and as the authors' ``np.mean(null >= paired)``). ``corr``: ``[S_a, S_b]`` the full
    correlation (its rows and columns of the concept features are what the authors correlate)."""
    out = {}
    C = corr.numpy()
    for name, keywords in groups.items():
        fa, fb = concept_features(words_a, keywords), concept_features(words_b, keywords)
        g = {"features_a": len(fa), "features_b": len(fb), "n_pairs": 0, "words": list(keywords), "scores": {}}
        out[name] = g
        if min(len(fa), len(fb)) < MIN_FEATURES:
            g["note"] = f"{len(fa)} concept feature(s) in A and {len(fb)} in B: the authors score a group with " \
                        f"at least {MIN_FEATURES} on each side"
            continue
        ra, rb = first_seen_pairs(C[np.ix_(fa, fb)])
        a, b = np.asarray(fa)[ra], np.asarray(fb)[rb]
        g.update(n_pairs=int(a.size), pairs=[[int(i), int(j)] for i, j in zip(a, b)],
                 mean_corr=float(C[a, b].mean()))
        if a.size < MIN_FEATURES:
            g["note"] = f"{a.size} pair(s): the authors score a group with at least {MIN_FEATURES}"
            continue
        X, Y = dec_a[a], dec_b[b]
        for m in CONCEPT_MEASURES:
            f = cfg.measure(m)
            try:
                s = f(X, Y)
                shuffled = nulls.shuffled(f, X, Y, s.value, runs=runs, seed=cfg.seed)
            except UniversalityError as e:
                g["scores"][m] = {"error": str(e)}
                continue
            g["scores"][m] = {"value": s.value, "used": s.used, "shuffled": shuffled.to_json()}
    return out
