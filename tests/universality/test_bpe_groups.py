"""Keyword groups on a byte-level BPE tokenizer (zoo:tiny-l): a word the tokenizer splits into
pieces is in the vocabulary, a top activation on any piece reads as its whole word, and the
semantic subspaces of a tiny-l comparison are not all empty; a word-level tokenizer's behaviour
is unchanged."""
from __future__ import annotations

import pytest
import torch

from sae_core.universality.keyword_groups import vocabulary_hits, zoo_groups
from sae_core.universality.subspaces import members
from sae_core.universality.words import TokenWords

pytest.importorskip("transformer_lens")


def _encode(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def test_a_word_the_bpe_splits_is_in_the_vocabulary_and_an_unknown_word_level_word_is_not(tiny_l, tiny_b):
    bpe, wl = tiny_l.tokenizer, tiny_b.tokenizer
    assert len(_encode(bpe, " January")) > 1 and len(_encode(bpe, " cat")) > 1  # split: ' J' + 'anuary'
    hits = vocabulary_hits({"months": ("January", "May"), "animals": ("cat", "dog"), "places": ("Canada",)}, bpe)
    assert hits == {"months": ["January", "May"], "animals": ["cat", "dog"], "places": ["Canada"]}
    assert all(vocabulary_hits(zoo_groups(), bpe).values())  # no zoo group is empty on tiny-l
    # word-level: one known token or nothing; an unknown word is its UNK token, not in the vocabulary
    assert _encode(wl, " Canada") == [wl.unk_token_id]
    hits = vocabulary_hits({"months": ("January", "may"), "places": ("Canada",), "two": ("ice cream",)}, wl)
    assert hits == {"months": ["January", "may"], "places": [], "two": []}


def test_each_piece_of_a_split_word_reads_as_the_whole_word(tiny_l):
    tok = tiny_l.tokenizer
    ids = _encode(tok, " the cat saw January")
    pieces = [tok.decode([i]) for i in ids]
    assert pieces[-2:] == [" J", "anuary"]
    words = TokenWords(tok).words_of(ids)
    assert [w.lower() for w in words[-2:]] == ["january", "january"]
    assert words[:4] == ["the", "cat", "cat", "saw"]  # ' c' + 'at'
    # a lone space token begins the word after it; punctuation and newlines stay apart
    ids = _encode(tok, " Van done in 12.\nThe dog")
    got = dict(zip(range(len(ids)), TokenWords(tok).words_of(ids)))
    assert {got[j] for j, i in enumerate(ids) if tok.decode([i]) in (" ", "V", "an")} == {"Van"}
    assert {got[j] for j, i in enumerate(ids) if tok.decode([i]) in (" 1", "2")} == {"12"}
    assert "." in got.values() and "The" in got.values()


def test_a_word_level_token_is_its_own_word(tiny_b):
    from sae_core.models.corpus import generate_documents

    tok = tiny_b.tokenizer
    docs = generate_documents(0)
    reader = TokenWords(tok)
    for _ in range(20):
        ids = _encode(tok, next(docs))
        assert reader.words_of(ids) == [tok.decode([i]).strip() for i in ids]


def test_a_pair_on_the_second_piece_of_a_group_word_joins_the_group(tiny_l):
    """The job stores each top activation's word (``words_a``/``words_b``); a pair whose top
    token is the piece 'anuary' joins "months" through its word, and a pair of another word
    (or an older result with no words, on a word-level token) does not."""
    tok = tiny_l.tokenizer
    ids = torch.tensor(_encode(tok, " the cat saw January") + _encode(tok, " the cat saw May"))
    doc = torch.tensor([0] * 6 + [1] * (len(ids) - 6))
    r = 5  # 'anuary', the second piece of " January"
    assert tok.decode([int(ids[r])]) == "anuary"
    reader = TokenWords(tok)
    bpe_pair = {"top_a": [tok.decode([int(ids[r])])], "top_b": [" saw"],
                "words_a": [reader.word(ids, doc, r)], "words_b": ["saw"]}
    old_pair = {"top_a": ["dog"], "top_b": ["the"]}  # a word-level result from before words were stored
    months = ("January", "May")
    assert members([bpe_pair, old_pair], months).tolist() == [0]
    assert members([bpe_pair, {"top_a": ["May"], "top_b": ["the"]}], months).tolist() == [0, 1]
    assert members([{**bpe_pair, "words_a": ["anuary"]}], months).tolist() == []  # the bare piece is no word


def test_the_authors_concept_features_find_a_split_word_from_either_piece(tiny_l):
    from sae_core.universality.concepts import concept_features, concept_words

    tok = tiny_l.tokenizer
    ids = torch.tensor(_encode(tok, " we went in January with the cat ."))
    doc = torch.zeros_like(ids)
    pieces = [tok.decode([int(i)]) for i in ids]
    j, c = pieces.index(" J"), pieces.index(" c")
    assert pieces[j + 1] == "anuary" and pieces[c + 1] == "at"
    top_rows = torch.tensor([[j + 1, j, c + 1, -1]])  # features on 'anuary', ' J', 'at', none
    words = concept_words(top_rows, ids, doc, tok)
    assert words == [{"january"}, {"january"}, {"cat"}, set()]
    assert concept_features(words, ("January", "May")) == [0, 1]


@pytest.mark.slow  # harvests both models and trains two small SAEs: ~15-30 s on 2 cores
def test_a_tiny_l_comparison_has_a_zoo_group_with_pairs(tmp_path):
    from sae_core.universality.analysis import AnalysisConfig
    from sae_core.universality.job import Universality, UniversalityConfig, universality_to_workspace
    from sae_core.workspace import Workspace

    hook = "blocks.3.hook_resid_post"
    cfg = UniversalityConfig(model_a="zoo:tiny-l", hook_a=hook, model_b="zoo:tiny-l-backdoor", hook_b=hook,
                             n_tokens=6000, d_sae=128, k=8, train_tokens=4096 * 2,
                             analysis=AnalysisConfig(runs=10, runs_small=10, bootstrap_runs=10))
    res = Universality.open(universality_to_workspace(Workspace(tmp_path / "ws"), cfg).path).results
    sub = res["subspaces"]
    assert set(sub) == set(zoo_groups()) and all(g["in_vocabulary"] for g in sub.values())
    assert any(g["n_pairs"] > 0 for g in sub.values()), {n: g["n_pairs"] for n, g in sub.items()}
    p = res["pairs"][0]
    assert len(p["words_a"]) == len(p["top_a"]) and len(p["words_b"]) == len(p["top_b"])
    for g in sub.values():
        assert g["n_pairs"] == len(members(res["pairs"], tuple(g["words"])))
