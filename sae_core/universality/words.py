"""Words of tokens: the word a token belongs to in its document, and whether a tokenizer spells a word.

Keyword groups name words ("January", "cat"), but a byte-level BPE tokenizer (the zoo's
``tiny-l``, GPT-2, Llama 3, Qwen) splits many words into pieces: " January" is ' J' + 'anuary',
" Van" is ' ' + 'V' + 'an'. A feature that fires on 'anuary' is about January, so a top
activation is read as the *word* its token belongs to in context, not as the bare piece.

The rule, one for every tokenizer (``TokenWords``): a token continues the word of the token before
it (in the same document) unless its piece of the text starts with whitespace, or the two pieces
meet at a character that is not part of a word (a letter, a digit, or a byte of a character split
over tokens); a piece of bare spaces (byte-level BPE's lone 'Ġ') begins the word that follows it.
A token's word is the run of tokens joined so, decoded together, stripped. A word-level
tokenizer's decoder puts a space before every word token, so there each token is its own word
(the token itself, as keyword groups always read it); its punctuation, which the decoder glues to
the word before, meets it at a non-word character and stays apart.

Each token's piece is read as it appears mid-text: the text it adds after a fixed anchor token
(``decode([anchor, i])`` minus ``decode([anchor])``, the anchor the first token that decodes to
letters alone), so decoders that strip a leading space from a text (sentencepiece's) still show
it, and a byte of a split character reads as U+FFFD.

``spells(word)``: the tokenizer writes " word" or "word" (or its lower, Capitalised or UPPER
form) as known tokens (no UNK) that decode back to it and join into one word under the same rule,
so that a top activation can read as that word. On a word-level tokenizer that is a single known
token; a byte-level one spells any word made of word characters.
"""
from __future__ import annotations

import torch

from sae_core.models.tokens import REPLACEMENT

MAX_PIECES = 32  # a word longer than this many tokens on either side of its token is cut there
ANCHOR_SCAN = 2000  # the ids searched for an anchor token (module doc)


def _wordish(ch: str) -> bool:
    """A character that belongs inside a word: a letter or digit, or U+FFFD (a byte of a character
    split over tokens, most often a letter such as 'é')."""
    return ch.isalnum() or ch == REPLACEMENT


def joins(prev: str, piece: str) -> bool:
    """Whether the token whose text is ``piece`` continues the word of the token before it, whose
    text is ``prev`` (module doc)."""
    if not piece or piece[0].isspace():
        return False
    if not prev.strip(" "):  # a bare space token begins the word after it
        return True
    return _wordish(prev[-1]) and _wordish(piece[0])


def _anchor(tokenizer) -> int | None:
    """The first id that decodes to letters alone (module doc); None when the first ids have none."""
    for i in range(min(ANCHOR_SCAN, len(tokenizer))):
        if tokenizer.decode([i]).isalpha():
            return i
    return None


class TokenWords:
    """Reads tokens as words for one tokenizer (module doc); each id's piece is decoded once."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._anchor = _anchor(tokenizer)
        self._anchor_text = tokenizer.decode([self._anchor]) if self._anchor is not None else ""
        self._pieces: dict[int, str] = {}

    def piece(self, i: int) -> str:
        """Token ``i``'s text as it appears after another token (module doc); "" for an unknown id (-1)."""
        if i < 0:
            return ""
        if (text := self._pieces.get(i)) is None:
            text = self._after_anchor(i)
            self._pieces[i] = text if text is not None else self.tokenizer.decode([i])
        return self._pieces[i]

    def _after_anchor(self, i: int) -> str | None:
        """What token ``i`` adds to the anchor's text; None without an anchor, or when the decoder
        rewrites the anchor's own text once ``i`` follows it."""
        if self._anchor is None:
            return None
        both = self.tokenizer.decode([self._anchor, i])
        return both[len(self._anchor_text):] if both.startswith(self._anchor_text) else None

    def span(self, token_ids: torch.Tensor, doc: torch.Tensor, r: int) -> tuple[int, int]:
        """``(lo, hi)``, inclusive: the rows of the word that contains row ``r`` of a token stream
        (``token_ids``, ``doc``: each row's token and document; a word never crosses documents)."""
        n = token_ids.numel()

        def joined(j: int) -> bool:  # row j continues row j-1's word
            return bool(doc[j] == doc[j - 1]) and joins(self.piece(int(token_ids[j - 1])),
                                                         self.piece(int(token_ids[j])))
        lo = r
        while lo > 0 and r - lo < MAX_PIECES and joined(lo):
            lo -= 1
        hi = r
        while hi + 1 < n and hi - r < MAX_PIECES and joined(hi + 1):
            hi += 1
        return lo, hi

    def word(self, token_ids: torch.Tensor, doc: torch.Tensor, r: int) -> str:
        """The word that contains row ``r``, decoded whole and stripped ("" for an unknown token)."""
        if int(token_ids[r]) < 0:
            return ""
        lo, hi = self.span(token_ids, doc, r)
        ids = [int(t) for t in token_ids[lo:hi + 1].tolist() if t >= 0]
        return self.tokenizer.decode(ids).strip()

    def words_of(self, ids: list[int]) -> list[str]:
        """The word of each token of one text's ids (one document), stripped."""
        t = torch.tensor(ids, dtype=torch.int64)
        doc = torch.zeros_like(t)
        return [self.word(t, doc, r) for r in range(len(ids))]

    def spells(self, word: str) -> bool:
        """Whether the tokenizer writes ``word`` as one word of known tokens (module doc)."""
        tok = self.tokenizer
        unk = getattr(tok, "unk_token_id", None)
        forms = dict.fromkeys((word, word.lower(), word.capitalize(), word.upper()))
        for form, text in ((f, t) for f in forms for t in (" " + f, f)):  # sentencepiece adds its own space
            ids = list(tok.encode(text, add_special_tokens=False))
            if not ids or (unk is not None and unk in ids) or tok.decode(ids).strip() != form:
                continue
            if all(joins(self.piece(a), self.piece(b)) for a, b in zip(ids, ids[1:])):
                return True
        return False
