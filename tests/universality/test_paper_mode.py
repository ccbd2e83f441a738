"""The authors' computation of universality (issue #29), step by step against hand-made cases:
the filter order and non-concept list of ``run_expm``, their p-value, the concept features and
pairs of ``getSemanticScores_pythia.py``, keyword groups, and the dense (pre-activation) paths."""
import json

import numpy as np
import pytest
import torch

from sae_core.universality import UniversalityError
from sae_core.universality.analysis import AnalysisConfig
from sae_core.universality.concepts import concept_features, concept_subspaces, concept_words, first_seen_pairs
from sae_core.universality.correlation import Codes, Correlation, CorrelationAccumulator, TopTokens
from sae_core.universality.keyword_groups import AUTHORS_GROUPS, check_groups, read_groups, vocabulary_hits
from sae_core.universality.matching import AUTHORS_NONCONCEPT, MatchConfig, match
from sae_core.universality.nulls import Significance


def _corr(rows):
    c = torch.tensor(rows)
    return Correlation(c, torch.ones(c.shape[0], dtype=torch.bool), torch.ones(c.shape[1], dtype=torch.bool), 1000)


def test_the_authors_order_takes_one_to_one_before_the_threshold():
    # B0 (first seen) and B1 both choose A0; B0's correlation is under the threshold
    c = _corr([[0.05, 0.9, 0.0],
               [0.0, 0.0, 0.7]])
    kw = dict(drop_nonconcept=False, shared_token=False, dedupe="first")
    ours = match(c, MatchConfig(**kw))
    theirs = match(c, MatchConfig(**kw, order="paper"))
    assert list(zip(ours.a, ours.b)) == [(0, 1), (1, 2)]   # the threshold first: A0 keeps B1
    assert list(zip(theirs.a, theirs.b)) == [(1, 2)]        # A0's one place went to B0, then the threshold
    assert [s for s, _ in theirs.steps] == ["many-to-one", "one per A feature (first)", "correlation > 0.1"]
    assert [n for _, n in theirs.steps] == [3, 2, 1]
    assert theirs.step_means == pytest.approx(((0.05 + 0.9 + 0.7) / 3, (0.05 + 0.7) / 2, 0.7))
    assert "the authors' filter order" in MatchConfig(**kw, order="paper").label
    with pytest.raises(UniversalityError, match="order 'sideways'"):
        MatchConfig(order="sideways")
    with pytest.raises(UniversalityError, match="nonconcept_list 'mine'"):
        MatchConfig(nonconcept_list="mine")


def test_the_authors_nonconcept_list_is_their_twelve_strings_on_decoded_tokens():
    assert len(AUTHORS_NONCONCEPT) == 12 and {".", "\n", "\\n", "", " ", "<|endoftext|>"} <= AUTHORS_NONCONCEPT
    assert ";" not in AUTHORS_NONCONCEPT and ")" not in AUTHORS_NONCONCEPT  # ours would drop these; theirs not
    c = _corr([[0.9, 0.0, 0.0], [0.0, 0.8, 0.0], [0.0, 0.0, 0.7]])
    top_a = [{"March", "."}, {"cat", ";"}, {"dog"}]
    top_b = [{"March"}, {"cat", ";"}, {"cow"}]
    m = match(c, MatchConfig(nonconcept_list="authors"), top_a=top_a, top_b=top_b, nonconcept=AUTHORS_NONCONCEPT)
    # A0 has "." among its top tokens; A1/B1 share "cat" (";" is not on their list); A2/B2 share nothing
    assert list(zip(m.a, m.b)) == [(1, 1)]


def test_the_authors_p_value_beside_ours():
    s = Significance(0.5, np.array([0.1, 0.2, 0.6, 0.4]), 0.4, 1.0, "shuffled").to_json()
    assert s["p_authors"] == 0.25 and s["p"] == 0.4
    assert Significance(0.9, np.zeros(9), 0.1, 5.0, "shuffled").to_json()["p_authors"] == 0.0  # theirs can be 0


class _Tok:
    """Decodes ids of a tiny word list the way the zoo's tokenizer does (spaces between words,
    none before punctuation)."""
    WORDS = ["<bos>", "in", "March", "we", "went", ".", "May", "the", "may", "cat", "sat", "\n"]

    def decode(self, ids):
        out = ""
        for i in ids:
            w = self.WORDS[i]
            out += w if not out or w in (".", "\n") else " " + w
        return out

    def __len__(self):
        return len(self.WORDS)


def test_concept_features_need_the_keyword_as_top_token_and_in_its_window():
    tok = _Tok()
    #          doc 0: "in March we went ."      doc 1: "the cat sat May"     doc 2: "may"
    ids = torch.tensor([1, 2, 3, 4, 5, 7, 9, 10, 6, 8])
    doc = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 2])
    # per feature (column) its top rows: f0 "March", f1 "went", f2 "May" and "may", f3 "cat", f4 none
    top_rows = torch.tensor([[1, 3, 8, 6, -1], [-1, -1, 9, -1, -1]])
    words = concept_words(top_rows, ids, doc, tok)
    assert words == [{"march"}, {"went"}, {"may"}, {"cat"}, set()]
    assert concept_features(words, ("January", "MARCH", "may")) == [0, 2]
    # the window is idx-2 .. idx+1 of the token's own document: row 8 ("May") sees "cat sat May", not doc 2
    from sae_core.universality.contexts import doc_windows
    assert doc_windows(doc, [8, 1], 2, 1) == [[6, 7, 8], [0, 1, 2]]


def test_first_seen_pairs_keep_one_pair_per_a_feature_in_b_order():
    corr = np.array([[0.2, 0.9, 0.1, 0.0],
                     [0.1, 0.0, 0.8, 0.3],
                     [0.0, 0.0, 0.0, 0.2]])
    rows, cols = first_seen_pairs(corr)    # B0 -> A0, B1 -> A0, B2 -> A1, B3 -> A1
    assert list(zip(rows, cols)) == [(0, 0), (1, 2)]  # B0 seen before B1 (though B1 correlates more)


def test_concept_subspaces_pair_within_each_group_and_score_against_1000_shuffles():
    rng = np.random.default_rng(0)
    d = 16
    dec_a = rng.normal(size=(40, d))
    dec_b = np.zeros((50, d))
    corr = torch.full((40, 50), 0.01)
    # features 0..11 of A are "month" features, paired with B 20..31 (B's rows A's, their coordinates
    # permuted and scaled: every similarity between rows, and every canonical correlation, the same)
    R = 2.0 * np.eye(d)[rng.permutation(d)]
    for i in range(12):
        corr[i, 20 + i] = 0.8
        dec_b[20 + i] = dec_a[i] @ R
    dec_b[np.arange(50) < 20] = rng.normal(size=(20, d))
    dec_b[32:] = rng.normal(size=(18, d))
    words_a = [{"march"} if i < 12 else set() for i in range(40)]
    words_b = [{"may"} if 20 <= j < 32 else ({"cat"} if j == 40 else set()) for j in range(50)]
    groups = {"months": ("March", "May"), "animals": ("cat", "dog"), "empty": ("Korea",)}
    out = concept_subspaces(corr, dec_a, dec_b, words_a, words_b, groups, AnalysisConfig(paper_compat=True), runs=200)
    g = out["months"]
    assert (g["features_a"], g["features_b"], g["n_pairs"]) == (12, 12, 12)
    assert g["pairs"] == [[i, 20 + i] for i in range(12)] and g["mean_corr"] == pytest.approx(0.8)
    assert g["scores"]["svcca"]["value"] == pytest.approx(1.0, abs=1e-6)
    assert g["scores"]["rsa"]["value"] == pytest.approx(1.0, abs=1e-6)
    assert g["scores"]["rsa"]["shuffled"]["p_authors"] == 0.0 and g["scores"]["rsa"]["shuffled"]["runs"] == 200
    assert out["animals"]["features_a"] == 0 and "at least 3" in out["animals"]["note"]
    assert out["empty"] == {**out["empty"], "features_a": 0, "features_b": 0, "n_pairs": 0, "scores": {}}


def test_keyword_groups_the_papers_the_users_and_bad_files(tmp_path, tiny_a):
    assert list(AUTHORS_GROUPS) == ["Time", "Calendar", "People/Roles", "Nature", "Emotions", "MonthNames",
                                    "Countries", "Biology"]
    hits = vocabulary_hits(AUTHORS_GROUPS, tiny_a.tokenizer)
    assert hits["MonthNames"] == list(AUTHORS_GROUPS["MonthNames"])  # the zoo has every month
    assert hits["Countries"] == [] and hits["Biology"] == []        # and no country, no biology
    assert "calm" in hits["Emotions"] and "friend" in hits["People/Roles"]
    f = tmp_path / "g.json"
    f.write_text(json.dumps({"pets": ["cat", "dog"]}))
    assert read_groups(f) == {"pets": ("cat", "dog")}
    f.write_text("{pets: [cat]}")
    with pytest.raises(UniversalityError, match="is not JSON"):
        read_groups(f)
    with pytest.raises(UniversalityError, match="no keyword-group file"):
        read_groups(tmp_path / "nope.json")
    with pytest.raises(UniversalityError, match="group 'pets' must be a non-empty list of words"):
        check_groups({"pets": "cat"})
    with pytest.raises(UniversalityError, match="give a JSON object of group names"):
        check_groups(["cat"])


def test_dense_pre_activations_take_the_dense_paths_with_the_same_results():
    g = torch.Generator().manual_seed(5)
    A = torch.relu(torch.randn(1500, 30, generator=g))          # half the entries positive: dense
    B = torch.relu(torch.randn(1500, 20, generator=g) + A[:, :20])
    toks = torch.randint(0, 100, (1500,), generator=g)
    dense, coded = CorrelationAccumulator(30, 20), CorrelationAccumulator(30, 20)
    td, tc = TopTokens(30, 5), TopTokens(30, 5)
    for s in range(0, 1500, 400):
        dense.update(A[s:s + 400], B[s:s + 400])
        coded.update(Codes.of(A[s:s + 400]), Codes.of(B[s:s + 400]))
        td.update(A[s:s + 400], toks[s:s + 400])
        tc.update(Codes.of(A[s:s + 400]), toks[s:s + 400])
    want = np.corrcoef(A.T.numpy(), B.T.numpy())[:30, 30:]
    np.testing.assert_allclose(dense.result().corr.numpy(), want, atol=1e-5)
    torch.testing.assert_close(dense.result().corr, coded.result().corr)
    assert torch.equal(td.values, tc.values) and torch.equal(td.tokens, tc.tokens)
    assert torch.equal(td.values, A.topk(5, dim=0).values)
