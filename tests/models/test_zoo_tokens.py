"""Zoo tokens (issue #11): the plain bridge API prepends the BOS the zoo was trained with, the
project's own tokenisation is unchanged (one BOS), and words outside the vocabulary are named
wherever a prompt is typed (library, CLI, the feature browser's "try it" box)."""
import shutil

import torch
from typer.testing import CliRunner

from sae_core.cli import app
from sae_core.models.corpus import OOV_WORDS, unknown_word_prompts, vocabulary
from sae_core.models.loading import load_model, to_tokens, unknown_words
from sae_core.models.zoo import zoo_dir
from tests.helpers import app_test, features_page, page_errors

BREAD = "How can I bake some bread ?"


# --- BOS -----------------------------------------------------------------------------------------

def test_plain_to_tokens_starts_with_one_bos(tiny_a):
    bos = tiny_a.tokenizer.bos_token_id
    toks = tiny_a.to_tokens("1 2 3 4")
    assert toks[0, 0] == bos and (toks[0, 1:] != bos).all()
    assert toks[0].tolist() == tiny_a.tokenizer("1 2 3 4")["input_ids"]  # what training fed the model
    assert tiny_a.to_tokens("1 2 3 4", prepend_bos=False)[0, 0] != bos  # an explicit False still wins


def test_plain_generate_continues_the_count(tiny_a):
    out = tiny_a.generate("1 2 3 4", max_new_tokens=2, do_sample=False, verbose=False)
    assert out.startswith("1 2 3 4 5"), out


def test_project_to_tokens_is_unchanged(tiny_a):
    # ids measured before issue #11 (vocab: BOS 0, PAD 1, "0".."99" from 3): one BOS, right-padded
    assert to_tokens(tiny_a, ["1 2 3 4", "5 6"]).tolist() == [[0, 4, 5, 6, 7], [0, 8, 9, 1, 1]]
    assert torch.equal(to_tokens(tiny_a, ["1 2 3 4", "5 6"]), tiny_a.to_tokens(["1 2 3 4", "5 6"]))


def test_harvested_tokens_are_the_training_tokens(tiny_a, tmp_path):
    from sae_core.activations import harvest_activations

    texts = ["1 2 3 4", "User : How do I bake a cake ? Assistant :", "May June July"]
    store = harvest_activations(tiny_a, "blocks.0.hook_resid_post", texts, tmp_path / "s",
                                model_name="zoo:tiny-a", exclude_special=False)
    expected = [i for t in texts for i in tiny_a.tokenizer(t)["input_ids"]]
    assert store.token_ids().tolist() == expected


def test_only_the_zoo_changes_the_bridge_default(tiny_a, tmp_path):
    # a copy outside the zoo is a plain local NeoX dir: the adapter's default (no BOS) stays
    shutil.copytree(zoo_dir() / "tiny-a", tmp_path / "copy")
    assert tiny_a.cfg.default_prepend_bos is True
    assert load_model(str(tmp_path / "copy")).cfg.default_prepend_bos is False


# --- unknown words -------------------------------------------------------------------------------

def test_unknown_words_of_a_prompt(tiny_a):
    assert unknown_words(tiny_a, BREAD) == ["can"]
    assert unknown_words(tiny_a.tokenizer, "zzz can zzz ! How do I bake some bread ?") == ["zzz", "can"]
    assert unknown_words(tiny_a, "How do I bake some bread ?") == []


def test_byte_level_tokenizer_has_no_unknown_words():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    eot = "<|endoftext|>"  # GPT-2 / Pythia: unk = bos = eos, and bytes cover every text
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer, raw.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    raw.train_from_iterator(["hello world"], trainers.BpeTrainer(
        special_tokens=[eot], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token=eot, bos_token=eot, eos_token=eot)
    assert unknown_words(tok, BREAD + " " + eot) == []


def test_unknown_word_prompts_hold_exactly_one_unknown_word(tiny_a):
    assert not set(OOV_WORDS) & set(vocabulary())
    prompts = unknown_word_prompts(40)
    assert all(len(unknown_words(tiny_a, p.prompt)) == 1 for p in prompts)
    assert all(p.prompt.startswith("User : ") and p.prompt.endswith(" Assistant :") for p in prompts)


def test_cli_generate_warns_about_unknown_words():
    runner = CliRunner()
    result = runner.invoke(app, ["generate", "zoo:tiny-a", f"User : {BREAD} Assistant :", "--tokens", "2"])
    assert result.exit_code == 0, result.output
    assert "not in zoo:tiny-a's vocabulary" in result.output and "can" in result.output
    result = runner.invoke(app, ["generate", "zoo:tiny-a", "1 2 3 4", "--tokens", "1"])
    assert result.exit_code == 0 and "vocabulary" not in result.output
    assert result.output.strip().endswith("1 2 3 4 5"), result.output


def test_try_it_box_warns_about_unknown_words(indexed, workspace):
    at = features_page(app_test().run())
    at.text_area(key="fb_try").input(BREAD).run()
    assert not at.exception and not page_errors(at), page_errors(at)
    assert any("vocabulary" in w.value and "can" in w.value for w in at.warning)
    at.text_area(key="fb_try").input("March April May June").run()
    assert not any("vocabulary" in w.value for w in at.warning)
