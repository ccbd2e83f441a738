"""Tokens as a reader sees them (``sae_core.models.tokens``): on a byte-level BPE, leading spaces
stay with their token and a character split over several tokens is shown whole; the zoo's
word-level tokens keep the space between them."""
from __future__ import annotations

import pytest

from sae_core.models import tokens

TEXT = "the café — naïve 🙂 the end"


@pytest.fixture(scope="module")
def bpe():
    """A byte-level BPE with few merges, so every multi-byte character is split into bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|bos|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the end of the story", "the theme", "then the"] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>")


def test_pieces_join_to_the_decoded_text_with_split_characters_whole(bpe):
    ids = bpe(TEXT)["input_ids"]
    assert len(ids) > len(TEXT.split()) + 6  # the accented letters, the dash and the emoji are split
    assert any(tokens.REPLACEMENT in bpe.decode([i]) for i in ids)  # one id at a time shows U+FFFD
    pieces = tokens.token_pieces(bpe, ids)
    assert "".join(pieces) == bpe.decode(ids) == TEXT
    assert "🙂" in pieces and "é" in "".join(p for p in pieces if "é" in p)
    assert not any(tokens.REPLACEMENT in p for p in pieces)
    assert pieces[pieces.index("🙂") - 1] == ""  # the emoji's first bytes show nothing: its last token shows it
    assert " the" in pieces  # the leading space stays with its token


def test_a_stored_table_assembles_the_same_pieces_without_the_tokenizer(bpe):
    ids = bpe(TEXT)["input_ids"]
    vocab, partial_hex, spaced = tokens.vocab_table(bpe, len(bpe))
    assert not spaced and partial_hex  # byte-level: tokens carry their spaces; some ids are bytes
    partial = {i: bytes.fromhex(h) for i, h in partial_hex.items()}
    assert tokens.assemble(ids, vocab, partial) == tokens.token_pieces(bpe, ids)
    k = tokens.token_pieces(bpe, ids).index("🙂")  # the emoji's last token
    cut = tokens.assemble(ids[:k], vocab, partial)  # a window that ends inside the emoji
    assert cut[:-1] == tokens.token_pieces(bpe, ids)[:k - 1] and cut[-1] == tokens.REPLACEMENT


def test_raw_bytes_reads_the_byte_alphabet_and_byte_fallback_tokens(bpe):
    e_acute = [i for i in bpe("é")["input_ids"]]
    assert b"".join(tokens.raw_bytes(bpe, i) for i in e_acute) == "é".encode()

    class Fallback:  # a SentencePiece vocabulary's byte-fallback token
        def convert_ids_to_tokens(self, i):
            return "<0xE2>"
    assert tokens.raw_bytes(Fallback(), 7) == b"\xe2"


def test_the_zoo_tokens_are_shown_alone_with_spaces_between():
    from transformers import AutoTokenizer

    from sae_core.models.zoo import resolve_zoo_name

    try:
        tok = AutoTokenizer.from_pretrained(str(resolve_zoo_name("zoo:tiny-a")))
    except Exception:
        pytest.skip("zoo:tiny-a is not built")
    ids = tok("one two three January", add_special_tokens=False)["input_ids"]
    assert tokens.spaced_between(tok)
    assert tokens.display_tokens(tok, ids) == (["one", "two", "three", "January"], True)
    assert "".join(tokens.token_pieces(tok, ids)) == tok.decode(ids)
