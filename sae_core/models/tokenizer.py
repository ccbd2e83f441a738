"""The zoo's word-level tokenizer: every corpus word (each number, number word and month) is one token.

Built with ``tokenizers`` and saved as ``tokenizer.json`` plus the ``transformers`` config files,
so the same directory loads with ``AutoTokenizer.from_pretrained(dir)`` offline. The BOS token is
``<|endoftext|>`` (as in Pythia) and is prepended by the tokenizer itself, so every caller
(training, harvesting, the bridge's ``to_tokens``) sees the same token stream.
"""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

from sae_core.models.corpus import BOS, PAD, UNK, vocabulary

SPECIAL_TOKENS = (BOS, PAD, UNK)


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


def save_tokenizer(out_dir: Path):
    """Write ``tokenizer.json`` and the ``transformers`` configs to ``out_dir``; return the HF tokenizer."""
    from transformers import PreTrainedTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(), bos_token=BOS, eos_token=BOS, pad_token=PAD,
        unk_token=UNK, add_bos_token=True, model_max_length=2048,
        clean_up_tokenization_spaces=True)
    hf.save_pretrained(str(out_dir))
    return hf


def same_tokenizer(tok_a, tok_b, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` unless the two tokenizers have the same vocabulary (activations of two
    models can be paired token by token only then)."""
    if tok_a.get_vocab() != tok_b.get_vocab():
        raise error("the two models have different tokenizers, so their activations cannot be "
                    "paired token by token; pair models that share one")
