"""Token ids as the text a reader sees: each token's own piece of the decoded string.

``tokenizer.decode([i])`` one id at a time is wrong for byte-level tokenizers (GPT-2, Llama 3,
Qwen, and the zoo's BPE family): a character of several UTF-8 bytes ("é", "—", an emoji) may be
split over two or three tokens, and each alone decodes to the replacement character U+FFFD. And a
word-level tokenizer's tokens carry no spaces (its decoder puts them between words), while a
byte-level one's carry their own leading space (``Ġthe`` is " the").

``token_pieces`` gives each token the text it adds to the decoded string, so that
``"".join(pieces) == tokenizer.decode(ids)``: a leading space stays with its token (pages show it),
and a split character appears whole on the token that completes it (the tokens before it show
nothing). Word-level tokens get the space their decoder puts before them.

A feature index stores no tokenizer, so it keeps what the same assembly needs per id
(``vocab_table``): the id's text alone, and for ids that are only part of a character, their raw
bytes. ``assemble`` rebuilds the pieces of a window of ids from that table.
"""
from __future__ import annotations

import codecs
import re
from functools import lru_cache

REPLACEMENT = "\ufffd"
_HEX_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """Each id's piece of ``tokenizer.decode(ids)`` (module doc); special tokens included."""
    pieces, prev = [], ""
    for j in range(len(ids)):
        text = tokenizer.decode(ids[:j + 1])
        if text.endswith(REPLACEMENT) and j + 1 < len(ids):
            pieces.append("")  # part of a character that a later token completes
            continue
        pieces.append(text[len(prev):] if text.startswith(prev) else text)
        prev = text
    return pieces


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (printable stand-ins for the 256 bytes), inverted:
    ``transformers``' own table, the one its byte-level tokenizers are converted with."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def raw_bytes(tokenizer, i: int) -> bytes | None:
    """The bytes token ``i`` stands for when it is only part of a UTF-8 character: a byte-level
    token (GPT-2's alphabet) or a byte-fallback token ``<0xE2>``; None when neither reading works."""
    token = tokenizer.convert_ids_to_tokens(int(i))
    if token is None:
        return None
    if (m := _HEX_BYTE.fullmatch(token)) is not None:
        return bytes([int(m.group(1), 16)])
    table = _byte_decoder()
    if all(c in table for c in token):
        return bytes(table[c] for c in token)
    return None


def vocab_table(tokenizer, d_vocab: int) -> tuple[list[str], dict[int, str], bool]:
    """What a feature index stores to show tokens without the tokenizer: each id's text alone,
    the raw bytes (hex) of the ids that are part of a character, and whether tokens are joined
    with spaces (a word-level tokenizer) or carry their own (byte-level)."""
    vocab = [tokenizer.decode([i]) for i in range(d_vocab)]
    partial = {}
    for i, text in enumerate(vocab):
        if REPLACEMENT in text and (b := raw_bytes(tokenizer, i)) is not None:
            partial[i] = b.hex()
    return vocab, partial, spaced_between(tokenizer)


def spaced_between(tokenizer, scan: int = 2000) -> bool:
    """Whether the decoder puts a space between tokens (word-level) rather than tokens carrying
    their own: decoding two plain word tokens together adds a space that neither has alone."""
    words = []
    for i in range(min(scan, len(tokenizer))):
        text = tokenizer.decode([i])
        if text.isalpha():
            words.append((i, text))
            if len(words) == 2:
                break
    if len(words) < 2:
        return False
    (a, ta), (b, tb) = words
    return tokenizer.decode([a, b]) == f"{ta} {tb}"


def display_tokens(tokenizer, ids: list[int]) -> tuple[list[str], bool]:
    """A live text's tokens as pages show them, and whether they are shown with spaces between
    (word-level: each token alone) or joined as they are (byte-level: ``token_pieces``)."""
    if spaced_between(tokenizer):
        return [tokenizer.decode([i]) for i in ids], True
    return token_pieces(tokenizer, ids), False


def assemble(ids: list[int], vocab: list[str], partial: dict[int, bytes]) -> list[str]:
    """Pieces of a window of ids from a stored table (``vocab_table``): ids that are part of a
    character contribute their bytes, shown whole on the id that completes the character; an
    incomplete character at the window's end shows as U+FFFD."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pieces = []
    for j, i in enumerate(ids):
        if i in partial:
            text = decoder.decode(partial[i], final=j == len(ids) - 1)
        else:
            text = decoder.decode(b"", final=True) + (vocab[i] if 0 <= i < len(vocab) else f"<{i}>")
        pieces.append(text)
    return pieces
