"""A feature index and the "Try it" probe on a model with a byte-level BPE tokenizer (issue #31):
tokens keep their leading spaces, a character split over several tokens is shown whole, and the
page joins them without spaces of its own."""
from __future__ import annotations

import pytest
import torch

from sae_core.models.tokens import REPLACEMENT

pytest.importorskip("transformer_lens")

TEXTS = ["the café is open 🙂 and the garden is green", "a naïve cat sat 🙂 near the café",
         "the end 🙂 of the café story"] * 4


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """``random:gpt2-tiny`` (512 ids) reading a byte-level BPE trained here with fewer merges than
    ids, so the accented letters and the emoji are split into bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from sae_core.models.loading import load_model

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([t.replace("é", "e").replace("ï", "i").replace("🙂", "") for t in TEXTS] * 5,
                            trainers.BpeTrainer(vocab_size=320, special_tokens=["<|bos|>", "<|pad|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A", special_tokens=[("<|bos|>", 0)])
    path = tmp_path_factory.mktemp("bpe")
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|bos|>",
                            pad_token="<|pad|>").save_pretrained(str(path))
    m = load_model("random:gpt2-tiny", device="cpu")
    m.tokenizer = AutoTokenizer.from_pretrained(str(path))
    return m


@pytest.fixture(scope="module")
def sae():
    from sae_core.sae.config import SAEConfig
    from sae_core.sae.registry import create_sae

    s = create_sae(SAEConfig(arch="relu", d_in=128, d_sae=64))
    s.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        s.b_enc.fill_(1.0)  # every feature fires on every token: every context is an example
    return s.eval()


def test_the_index_shows_split_characters_whole_and_leading_spaces(model, sae, tmp_path):
    from sae_core.features.config import IndexConfig
    from sae_core.features.job import build_feature_index

    hook = "blocks.0.hook_resid_post"
    index = build_feature_index(model, sae, hook, TEXTS, tmp_path / "idx",
                                IndexConfig(n_tokens=200, feature_map=False, n_top=40))
    assert index.spaced is False and index._bytes  # byte-level: pieces carry their spaces
    shown = [ex.tokens for i in range(4) for ex in index.feature(i).top]
    pieces = {p for toks in shown for p in toks}
    assert {" the", "é", "🙂"} <= pieces and "" in pieces  # leading spaces kept; split characters whole
    for toks in shown:  # U+FFFD only for bytes of a character the window cuts at either end
        inner = "".join(t for t in toks if t != "<|bos|>").strip(REPLACEMENT)
        assert REPLACEMENT not in inner and inner in "".join(TEXTS), toks


def test_try_it_on_byte_level_text(model, sae):
    from sae_core.features.probe import feature_acts_on_text

    out = feature_acts_on_text(model, sae, "blocks.0.hook_resid_post", "the café 🙂", 3)
    assert out.spaced is False and "".join(out.tokens) == "the café 🙂"
    assert {"é", "🙂", " ca"} <= set(out.tokens) and "" in out.tokens
    assert len(out.tokens) == len(out.acts) > 4
