"""``random:NAME``: hub architectures from shipped configs with seeded random weights (issue #15),
loaded through the same bridge path, labelled random, and usable by the whole pipeline."""
import json

import pytest
import torch

from sae_core.errors import ModelNotAvailableError
from sae_core.models import random_arch
from sae_core.models.loading import load_model, to_tokens

pytest.importorskip("transformer_lens")


def test_the_shipped_configs_are_the_hub_architectures():
    assert random_arch.shipped() == ["random:gemma-2-2b", "random:gemma-2-2b-tiny", "random:gpt2", "random:gpt2-tiny",
                                     "random:llama-3.2-1b", "random:llama-3.2-1b-tiny", "random:pythia-160m",
                                     "random:pythia-410m", "random:qwen2.5-0.5b", "random:qwen2.5-0.5b-tiny"]
    cfg = {n: json.loads((random_arch.resolve_random(n) / "config.json").read_text()) for n in random_arch.shipped()}
    assert (cfg["random:pythia-160m"]["hidden_size"], cfg["random:pythia-160m"]["num_hidden_layers"]) == (768, 12)
    assert (cfg["random:pythia-410m"]["hidden_size"], cfg["random:pythia-410m"]["num_hidden_layers"]) == (1024, 24)
    assert (cfg["random:gpt2"]["n_embd"], cfg["random:gpt2"]["n_layer"], cfg["random:gpt2"]["vocab_size"]) == \
        (768, 12, 50257)
    assert "random weights" in random_arch.describe("random:gpt2")
    assert random_arch.label("random:gpt2") == "random:gpt2 (random weights)"
    assert random_arch.label("zoo:tiny-a") == "zoo:tiny-a"


def test_a_name_that_is_not_shipped_is_refused_with_the_choices():
    with pytest.raises(ModelNotAvailableError, match="'random:llama-3b' is not a shipped random architecture; "
                                                     "choose one of random:gemma-2-2b, random:gemma-2-2b-tiny"):
        load_model("random:llama-3b", device="cpu")


@pytest.fixture(scope="module")
def gpt2():
    return load_model("random:gpt2", device="cpu")


def test_random_gpt2_is_seeded_and_runs_through_the_hooks_layer(gpt2):
    from sae_core.models.hooks import capture

    assert (gpt2.cfg.d_model, gpt2.cfg.n_layers, gpt2.cfg.n_heads, gpt2.cfg.d_vocab) == (768, 12, 12, 50257)
    again = load_model("random:gpt2", device="cpu")
    for (name, a), b in zip(gpt2.named_parameters(), again.parameters()):
        assert torch.equal(a, b), name  # the same seed: the same weights
    before = torch.random.get_rng_state()
    load_model("random:gpt2", device="cpu")
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is left alone
    toks = to_tokens(gpt2, ["one two three four", "January February"])
    assert toks[0, 0].item() == gpt2.tokenizer.bos_token_id
    hooks = ["blocks.3.hook_resid_post", "blocks.7.attn.hook_z", "blocks.11.mlp.hook_post"]
    got = capture(gpt2, toks, hooks)
    with torch.no_grad():
        _, cache = gpt2.run_with_cache(toks, names_filter=hooks)
    for h in hooks:
        torch.testing.assert_close(got[h], cache[h])
    assert got["blocks.11.mlp.hook_post"].shape[-1] == 3072


@pytest.mark.slow
def test_random_pythia_160m_harvests_trains_and_indexes_at_full_width(tmp_path, monkeypatch):
    """The pipeline at d_in 768: harvest, an SAE (k 32) with its downstream losses, its feature index
    (24576 latents at this width are timed in `bench/`; a smaller dictionary and 4 evaluation
    sequences instead of 64 keep this test short)."""
    import sae_core.sae.splice as splice

    real_eval = splice.eval_tokens
    monkeypatch.setattr(splice, "eval_tokens", lambda model, text=None, n_seqs=64, **kw: real_eval(model, text, 4, **kw))
    from sae_core.activations import harvest_to_workspace
    from sae_core.features.job import index_to_workspace
    from sae_core.features.config import IndexConfig
    from sae_core.sae.config import SAEConfig
    from sae_core.sae.io import load_sae
    from sae_core.training.job import train_to_workspace
    from sae_core.training.loop import TrainerConfig
    from sae_core.workspace import Workspace

    name, hook = "random:pythia-160m", "blocks.6.hook_resid_post"
    model = load_model(name, device="cpu")
    assert (model.cfg.d_model, model.cfg.n_layers, model.cfg.d_vocab) == (768, 12, 50304)
    ws = Workspace(tmp_path / "ws")
    acts = harvest_to_workspace(ws, name, hook, n_tokens=4000, model=model)  # a training batch of 2048, and held-out rows
    assert acts.model == name and acts.meta["d"] == 768 and acts.meta["n_tokens"] >= 3500
    cfg = SAEConfig(arch="topk", d_in=768, d_sae=1024, k=32)
    art = train_to_workspace(ws, acts, cfg, TrainerConfig(total_tokens=2048 * 2, batch_size=2048), model=model)
    metrics = json.loads((art.path / "metrics.json").read_text())
    assert metrics["l0"] == pytest.approx(32, abs=1)
    assert metrics["ce_clean"] > 0 and "ce_loss_recovered" in metrics
    sae = load_sae(art.path)
    index = index_to_workspace(ws, sae, name, hook, IndexConfig(n_tokens=1000, feature_map=False),
                               sae_source=art.name, model=model)
    assert index.model == name and index.meta["n_tokens"] > 0
