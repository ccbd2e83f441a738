"""load_model: zoo names, local dirs and hub names through one path; clear errors offline."""
import time

import pytest
import torch

from sae_core.errors import HookNotFoundError, ModelNotAvailableError
from sae_core.models.loading import check_hook, hook_layer, load_model, to_tokens
from sae_core.models.zoo import zoo_dir


def test_zoo_name_and_local_dir_give_the_same_model(tiny_a):
    from_dir = load_model(str(zoo_dir() / "tiny-a"))
    toks = to_tokens(tiny_a, "Van done in 1 . Hat done in")
    assert torch.equal(tiny_a(toks), from_dir(toks))
    assert tiny_a.cfg.n_layers == 2 and tiny_a.cfg.d_model == 128


def test_bridge_logits_equal_the_hf_model(tiny_a):
    from transformers import GPTNeoXForCausalLM

    hf = GPTNeoXForCausalLM.from_pretrained(str(zoo_dir() / "tiny-a")).eval()
    toks = to_tokens(tiny_a, ["one two three four", "May June July"])
    with torch.no_grad():
        ref = hf(toks).logits
    assert torch.allclose(tiny_a(toks)[0, :5], ref[0, :5], atol=1e-5)


def test_tokens_start_with_exactly_one_bos(tiny_a):
    toks = to_tokens(tiny_a, ["a b c", "one two"])
    bos = tiny_a.tokenizer.bos_token_id
    assert (toks[:, 0] == bos).all() and (toks[:, 1] != bos).all()


def test_unknown_zoo_name_lists_the_zoo():
    with pytest.raises(ModelNotAvailableError, match="zoo:tiny-a"):
        load_model("zoo:does-not-exist")


def test_unknown_hub_name_fails_fast_and_clearly_offline():
    t0 = time.time()
    with pytest.raises(ModelNotAvailableError, match="offline") as err:
        load_model("EleutherAI/pythia-160m-not-cached-here")
    assert "pythia-160m-not-cached-here" in str(err.value)
    assert time.time() - t0 < 30


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="config.json"):
        load_model(str(tmp_path))


def test_bad_hook_lists_valid_hooks(tiny_a):
    check_hook(tiny_a, "blocks.1.hook_resid_post")
    with pytest.raises(HookNotFoundError) as err:
        check_hook(tiny_a, "blocks.7.hook_resid_post")
    assert "blocks.1.hook_resid_post" in str(err.value) and "2 layers" in str(err.value)


def test_hook_layer():
    assert hook_layer("blocks.3.attn.hook_z") == 3
    assert hook_layer("hook_embed") is None
