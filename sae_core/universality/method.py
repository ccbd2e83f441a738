"""The universality result's Method table: each step as the authors' code computes it
(wlg1/univ_feat_geom: ``getScores_pythia.py:run_expm`` and ``getSemanticScores_pythia.py``) and
what the result in hand did, read from its config and results (issue #29). The page's Method panel
and README show it; results before ``job.REVISION`` 4 have no such record."""
from __future__ import annotations

from sae_core.universality.analysis import SMALL_PAIRS


def method_rows(config: dict, results: dict) -> list[dict[str, str]]:
    """Rows ``{step, authors' code, this result}`` for a result of revision 4 or later (``config``,
    ``results`` as stored in ``universality.json``)."""
    m, a = config["match"], config["analysis"]
    authors_list = m["nonconcept_list"] == "authors"
    order = ("token filters, one pair per A feature, then the correlation threshold (the authors' order)"
             if m["order"] == "paper" else "token filters, the correlation threshold, then one pair per A feature")
    dedupe = {"none": "off: every B feature keeps its partner", "first": "one pair per A feature, the first seen "
              "(in B order)", "best": "one pair per A feature, its most correlated B partner"}[m["dedupe"]]
    concepts = results["subspace_procedure"] == "concepts"
    empty = [n for n, g in results["subspaces"].items() if not g.get("in_vocabulary")]
    # revision 5 on: top activations read as the words their tokens belong to (byte-level BPE pieces)
    worded = all("words_a" in p for p in results["pairs"][:1])
    return [
        {"step": "activations correlated",
         "authors' code": "the SAE's dense ReLU pre-activations (sae.pre_acts, before the TopK); top 5 tokens "
                          "ranked by the same",
         "this result": {"pre_acts": "the SAEs' dense ReLU pre-activations, as the authors; top 5 tokens by the same",
                         "sparse": "the SAEs' sparse inference codes (this project's default); top 5 tokens by "
                                   "the same"}[results["codes"]]},
        {"step": "correlation",
         "authors' code": "z-scores (n-1 standard deviation + 1e-8) over every token of the batch, padding "
                          "included; Z_A^T Z_B / n",
         "this result": f"Pearson over {results['n_tokens']:,} paired tokens, pad/BOS/EOS rows dropped "
                        "(values (n-1)/n above the authors', the same partners)"},
        {"step": "matching", "authors' code": "each B feature's most correlated A feature (many-to-one)",
         "this result": m["rule"].replace("_", "-")},
        {"step": "non-concept filter",
         "authors' code": "a pair goes when either side's top tokens include one of 12 strings "
                          "('.', '\\n', '', ' ', '-', ',', '!', '?', <bos>, <|endoftext|>, ...)",
         "this result": ("off" if not m["drop_nonconcept"] else "the authors' 12 strings, on decoded tokens"
                         if authors_list else "specials and any token with no letter or digit (this project's)")},
        {"step": "shared top token", "authors' code": "the two top-5 lists share a decoded token",
         "this result": ("off" if not m["shared_token"] else "decoded tokens, as the authors" if authors_list
                         else "token ids")},
        {"step": "one-to-one", "authors' code": "optional (oneToOne_bool): the first pair seen per A feature; off "
                                                "in their main layer-pair run", "this result": dedupe},
        {"step": "filter order", "authors' code": "token filters, one-to-one, then correlation > 0.1",
         "this result": f"{order}; correlation > {m['min_corr']:g}"},
        {"step": "SVCCA",
         "authors' code": "one SVD direction per side (top_k_pca_comps compares the normalised cumulative variance "
                          "with 0.99 x the total variance, so it always keeps one)",
         "this result": "one direction per side, as the authors" if a["paper_compat"] else
                        f"the directions that hold {100 * a['var_threshold']:g}% of the variance"},
        {"step": "p-values", "authors' code": "mean(null >= paired) over 100 shuffles (semantic: 1000)",
         "this result": f"(1 + #null >= paired) / (1 + runs), {a['runs']} shuffles ({a['runs_small']} at "
                        f"{SMALL_PAIRS} pairs or fewer); the authors' p beside it"},
        {"step": "nulls", "authors' code": "shuffled pairing (random features: a mean, no p-value)",
         "this result": "shuffled pairing, random features of each SAE, bootstrap interval"},
        {"step": "semantic subspaces",
         "authors' code": "concept features found in each model apart (top token = keyword, keyword in the window "
                          "idx-2..idx+1), correlated within the group, one pair per A feature, 1000 shuffles",
         "this result": ("the authors' procedure (window decoded as one string; "
                         + ("a top token read as the whole word it belongs to; " if worded else "")
                         + "features in ascending order)") if concepts
                        else "the globally matched pairs with a keyword among either side's top "
                             + ("activations, each read as the whole word its token belongs to" if worded else "tokens")
                             + " (this project's)"},
        {"step": "keyword groups",
         "authors' code": "Time, Calendar, People/Roles, Nature, Emotions, MonthNames, Countries, Biology",
         "this result": ", ".join(results["subspaces"]) + (f"; no word in this vocabulary: {', '.join(empty)}"
                                                           if empty else "")},
        {"step": "mode", "authors' code": "-", "this result": results["mode"]},
    ]
