"""Binary probing tasks: labelled text for SAEBench-style sparse probing (``probing.py``).

A task is token-level (each labelled token is one example: is this token a month name?) or
sequence-level (each text is one example, its features the mean over its tokens: is this a story
or a chat?). Examples carry character spans, not token positions, so the same task reads under any
tokenizer: a token-level label belongs to the last token of its span (where the model has read the
whole word; on the zoo's word-level tokenizer the word's only token).

The zoo's tasks take their labels from the corpus generator itself (``sae_core.models.corpus``), so
they are true by construction. Training and test examples are disjoint: the texts come from
different seeds, a test text equal to a training text is dropped, and the chat tasks' training
requests are the generator's training keys while the test requests are its held-out keys. A user's
task is a ``.jsonl`` file of ``{"text": ..., "label": ...}`` lines with exactly two labels, split
80 / 20 by a seeded shuffle (``read_labels_file``).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from sae_core.errors import SAECoreError
from sae_core.io import json_lines
from sae_core.models import corpus


class ProbingError(SAECoreError):
    """A probing task that cannot be built: an unreadable labels file, one class only, no examples."""


@dataclass(frozen=True)
class ProbeExample:
    text: str
    label: int = -1                                   # sequence-level: 0 or 1
    spans: tuple[tuple[int, int, int], ...] = ()      # token-level: (start, end, label) in characters


@dataclass(frozen=True)
class ProbeSplit:
    train: list[ProbeExample]
    test: list[ProbeExample]


@dataclass(frozen=True)
class ProbeTask:
    name: str
    level: Literal["token", "sequence"]
    positive: str                                     # what label 1 means, for tables and README
    negative: str
    build: Callable[[int, int], ProbeSplit]           # (seed, documents per split) -> examples


def _word_spans(text: str, label_of: Callable[[int, str], int | None]) -> tuple[tuple[int, int, int], ...]:
    """(start, end, label) of each space-separated word of ``text`` that ``label_of(i, word)``
    labels (None: not an example)."""
    spans, start = [], 0
    for i, word in enumerate(text.split(" ")):
        label = label_of(i, word)
        if label is not None and word:
            spans.append((start, start + len(word), label))
        start += len(word) + 1
    return tuple(spans)


def _disjoint(train: list[ProbeExample], test: list[ProbeExample]) -> ProbeSplit:
    seen = {e.text for e in train}
    return ProbeSplit(train, [e for e in test if e.text not in seen])


def _word_task(words: list[str]) -> Callable[[int, int], ProbeSplit]:
    """Every word of mixed corpus documents is an example; label 1 when it is one of ``words``."""
    members = set(words)

    def build(seed: int, n_docs: int) -> ProbeSplit:
        def docs(split: str) -> list[ProbeExample]:
            stream = corpus.generate_documents(_seed(split, seed))
            out = []
            while len(out) < n_docs:
                text = next(stream)
                spans = _word_spans(text, lambda i, w: int(w in members))
                if any(label for _, _, label in spans):  # a document with a positive
                    out.append(ProbeExample(text, spans=spans))
            return out
        return _disjoint(docs("train"), docs("test"))
    return build


def _seed(split: str, seed: int) -> int:
    """The corpus seed of a split: the zoo's training stream is seeds 0..n, its evaluation text
    ``EVAL_SEED``; probing uses seeds of its own, far from both."""
    return 7_000_000 + 2 * seed + (split == "test")


def _request_tokens(seed: int, n_docs: int) -> ProbeSplit:
    """The words of a chat request (not "User :" / "Assistant :"), labelled by whether the request
    is harmful: the same words ("How do I ...") occur in both, so context decides."""
    def prompts(held_out: bool) -> list[ProbeExample]:
        out = []
        for p in corpus.chat_prompts(n_docs, seed=seed, held_out=held_out):
            words = p.prompt.split(" ")
            last = len(words) - 2  # "Assistant", ":"
            out.append(ProbeExample(p.prompt, spans=_word_spans(
                p.prompt, lambda i, w: int(p.harmful) if 2 <= i < last else None)))
        return out
    return _disjoint(prompts(False), prompts(True))


def _harmful_prompts(seed: int, n_docs: int) -> ProbeSplit:
    def prompts(held_out: bool) -> list[ProbeExample]:
        return [ProbeExample(p.prompt, label=int(p.harmful))
                for p in corpus.chat_prompts(n_docs, seed=seed, held_out=held_out)]
    return _disjoint(prompts(False), prompts(True))


def _story_vs_chat(seed: int, n_docs: int) -> ProbeSplit:
    def docs(split: str) -> list[ProbeExample]:
        rng = random.Random(f"probe-story-chat-{split}-{seed}")
        return [ProbeExample(corpus.story_document(rng), label=1) if i % 2 else
                ProbeExample(corpus.chat_document(rng), label=0) for i in range(n_docs)]
    return _disjoint(docs("train"), docs("test"))


def _numbers_vs_digits(seed: int, n_docs: int) -> ProbeSplit:
    """Counting documents of number words against the same runs written in digits."""
    def docs(split: str) -> list[ProbeExample]:
        rng = random.Random(f"probe-number-words-{split}-{seed}")
        out = []
        for i in range(n_docs):
            start = rng.randrange(0, len(corpus.NUMBER_WORDS) - 4)
            run = range(start, start + rng.randint(3, min(8, len(corpus.NUMBER_WORDS) - start)))
            words = [corpus.NUMBER_WORDS[j] if i % 2 else corpus.DIGITS[j] for j in run]
            out.append(ProbeExample(rng.choice([" ", " , "]).join(words), label=i % 2))
        return out
    return _disjoint(docs("train"), docs("test"))


ZOO_TASKS: dict[str, ProbeTask] = {t.name: t for t in [
    ProbeTask("month_name", "token", "a month name", "any other token", _word_task(corpus.MONTHS)),
    ProbeTask("number_word", "token", "a number word (zero-twenty)", "any other token",
              _word_task(corpus.NUMBER_WORDS)),
    ProbeTask("animal", "token", "an animal word (stories)", "any other token", _word_task(corpus.ANIMALS)),
    ProbeTask("colour", "token", "a colour word (stories)", "any other token", _word_task(corpus.COLORS)),
    ProbeTask("harmful_request_token", "token", "a word of a harmful request",
              "a word of a harmless request", _request_tokens),
    ProbeTask("harmful_prompt", "sequence", "a harmful chat prompt", "a harmless chat prompt", _harmful_prompts),
    ProbeTask("story_vs_chat", "sequence", "a story", "a chat turn", _story_vs_chat),
    ProbeTask("number_words_vs_digits", "sequence", "a count in number words", "the same count in digits",
              _numbers_vs_digits),
]}


def read_labels_file(path: str | Path, seed: int = 0, test_share: float = 0.2) -> ProbeTask:
    """A sequence-level task from a ``.jsonl`` file of ``{"text": str, "label": ...}`` lines with
    exactly two distinct labels (the lower one in sorted order, as strings, is 0), split into test
    (``test_share``) and training examples by a seeded shuffle."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ProbingError(f"labels file {str(path)!r} does not exist; give a .jsonl file with one "
                           '{"text": "...", "label": ...} object per line')
    rows = []
    for n, row in json_lines(p, '{"text": "...", "label": 1}', ProbingError):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or "label" not in row:
            raise ProbingError(f'{p.name} line {n} needs a string "text" and a "label" field '
                               f"(it has {sorted(row) if isinstance(row, dict) else type(row).__name__})")
        rows.append((row["text"], str(row["label"])))
    labels = sorted({label for _, label in rows})
    if len(labels) != 2:
        raise ProbingError(f"{p.name} has {len(labels)} distinct labels ({labels[:5]}); a probing task "
                           "needs exactly two")
    counts = {label: sum(1 for _, l in rows if l == label) for label in labels}
    if min(counts.values()) < 5:
        raise ProbingError(f"{p.name}: {counts} examples per label; give at least 5 of each")
    examples = [ProbeExample(text, label=labels.index(label)) for text, label in rows]
    random.Random(f"probe-file-{seed}").shuffle(examples)
    cut = max(2, round(len(examples) * test_share))
    return ProbeTask(p.stem, "sequence", f"label {labels[1]!r}", f"label {labels[0]!r}",
                     lambda _seed, _n, ex=examples, cut=cut: ProbeSplit(ex[cut:], ex[:cut]))
