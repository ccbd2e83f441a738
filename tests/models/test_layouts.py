"""Harvest, SAE training with its downstream losses, the feature index and the folded unembedding
on every tiny hub layout (issue #31): Llama (RMSNorm, SwiGLU, rotary, grouped-query attention),
Qwen2 (the same with q/k/v biases), Gemma 2 (pre- and post-norms, soft-capping, scaled tied
embeddings, norms that scale by 1 + weight) and GPT-2 (LayerNorm, sequential residual).

The references are the Hugging Face model's own modules, not the bridge's hooks: its
``hidden_states`` for the harvest, a forward hook on its decoder layer for the SAE splice, and
its final norm's own formula for the unembedding."""
from __future__ import annotations

import json
import math

import pytest
import torch

from sae_core.errors import HookNotFoundError
from sae_core.models.loading import check_hook, load_model, to_tokens
from sae_core.models.texts import corpus_texts

pytest.importorskip("transformer_lens")

LAYOUTS = ["random:llama-3.2-1b-tiny", "random:qwen2.5-0.5b-tiny", "random:gemma-2-2b-tiny", "random:gpt2-tiny"]
HOOK = "blocks.0.hook_resid_post"
# what each layout is: (key/value heads, query heads, final norm's class)
TRAITS = {"random:llama-3.2-1b-tiny": (2, 8, "LlamaRMSNorm"), "random:qwen2.5-0.5b-tiny": (2, 8, "Qwen2RMSNorm"),
          "random:gemma-2-2b-tiny": (2, 4, "Gemma2RMSNorm"), "random:gpt2-tiny": (4, 4, "LayerNorm")}


def _decoder_layers(hf):
    """The Hugging Face model's list of decoder layers (Llama/Qwen2/Gemma 2: ``model.layers``;
    GPT-2: ``transformer.h``)."""
    inner = getattr(hf, "model", None) or getattr(hf, "transformer")
    return getattr(inner, "layers", None) or getattr(inner, "h")


@pytest.fixture(scope="module", params=LAYOUTS)
def layout(request):
    return request.param, load_model(request.param, device="cpu")


@pytest.fixture(scope="module")
def texts():
    return corpus_texts(12, seed=5)


def test_each_tiny_layout_has_its_familys_traits(layout):
    name, model = layout
    kv, heads, norm = TRAITS[name]
    assert (model.cfg.d_model, model.cfg.n_layers, model.cfg.n_heads) == (128, 2, heads)
    assert (getattr(model.cfg, "n_key_value_heads", None) or heads) == kv
    assert type(getattr(model.ln_final, "_original_component", model.ln_final)).__name__ == norm
    again = load_model(name, device="cpu")
    for (p, a), b in zip(model.named_parameters(), again.parameters()):
        assert torch.equal(a, b), p  # seeded: the same weights on every load


def test_the_real_width_layouts_are_the_hub_shapes():
    from sae_core.models import random_arch

    shapes = {}
    for name in ("random:llama-3.2-1b", "random:qwen2.5-0.5b", "random:gemma-2-2b"):
        c = json.loads((random_arch.resolve_random(name) / "config.json").read_text())
        shapes[name] = (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"], c["num_key_value_heads"],
                        c["vocab_size"])
    assert shapes == {"random:llama-3.2-1b": (2048, 16, 32, 8, 128256),
                      "random:qwen2.5-0.5b": (896, 24, 14, 2, 151936),
                      "random:gemma-2-2b": (2304, 26, 8, 4, 256000)}
    assert {"random:llama-3.2-1b-tiny", "random:gemma-2-2b-tiny", "random:gpt2-tiny",
            "random:qwen2.5-0.5b-tiny"} <= set(random_arch.shipped())
    assert "layout of google/gemma-2-2b" in random_arch.random_spec("random:gemma-2-2b-tiny")["note"]


def test_the_harvest_equals_the_hf_models_hidden_states(layout, texts, tmp_path):
    from sae_core.activations import harvest_activations

    name, model = layout
    store = harvest_activations(model, HOOK, texts, tmp_path / "s", model_name=name, batch_size=5,
                                exclude_special=False)
    tokens_BT = to_tokens(model, texts)[:, :64]
    pad = model.tokenizer.pad_token_id
    real_BT = tokens_BT != pad
    with torch.no_grad():
        hidden = model.original_model(tokens_BT, attention_mask=real_BT.long(), output_hidden_states=True).hidden_states
    assert store.n_tokens == int(real_BT.sum())
    torch.testing.assert_close(store.read_all(), hidden[1][real_BT], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def trained(layout, tmp_path_factory):
    """A TopK SAE at ``HOOK`` of the layout, trained for a few steps, with its workspace."""
    from sae_core.activations import harvest_to_workspace
    from sae_core.sae.config import SAEConfig
    from sae_core.sae.io import load_sae
    from sae_core.training.job import train_to_workspace
    from sae_core.training.loop import TrainerConfig
    from sae_core.workspace import Workspace

    name, model = layout
    ws = Workspace(tmp_path_factory.mktemp("layout") / "ws")
    acts = harvest_to_workspace(ws, name, HOOK, n_tokens=3000, model=model)
    cfg = SAEConfig(arch="topk", d_in=128, d_sae=256, k=8)
    art = train_to_workspace(ws, acts, cfg, TrainerConfig(total_tokens=512 * 4, batch_size=512), model=model)
    return ws, art, load_sae(art.path)


def test_the_sae_splice_equals_a_hook_on_the_hf_decoder_layer(layout, trained):
    """CE with the SAE spliced at block 0's output, as ``downstream_metrics`` computes it, against
    the HF model run with a forward hook on its first decoder layer that swaps in the SAE's
    reconstruction (every position but BOS and padding, as the metrics patch)."""
    from sae_core.sae.splice import downstream_metrics, eval_tokens, reconstruct

    name, model = layout
    _, art, sae = trained
    metrics = json.loads((art.path / "metrics.json").read_text())
    assert metrics["l0"] == pytest.approx(8, abs=0.5) and math.isfinite(metrics["ce_loss_recovered"])
    toks = eval_tokens(model, n_seqs=6)
    got = downstream_metrics(model, sae, HOOK, toks, batch_size=6)
    tok = model.tokenizer
    real_BT = toks != tok.pad_token_id
    patch_BT = real_BT & ~torch.isin(toks, torch.tensor(sorted(set(tok.all_special_ids))))

    def swap(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        new = torch.where(patch_BT[..., None], reconstruct(sae, h), h)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    def ce(logits_BTV):
        logp = torch.log_softmax(logits_BTV[:, :-1].double(), -1).gather(-1, toks[:, 1:, None]).squeeze(-1)
        ok = real_BT[:, 1:]
        return float(-logp[ok].sum() / ok.sum())

    hf = model.original_model
    with torch.no_grad():
        clean = ce(hf(toks, attention_mask=real_BT.long()).logits)
        handle = _decoder_layers(hf)[0].register_forward_hook(swap)
        try:
            spliced = ce(hf(toks, attention_mask=real_BT.long()).logits)
        finally:
            handle.remove()
    assert got.ce_clean == pytest.approx(clean, rel=1e-4)
    assert got.ce_sae == pytest.approx(spliced, rel=1e-4)
    assert got.ce_sae != pytest.approx(got.ce_clean, rel=1e-3)  # the splice changed something


def test_the_feature_index_shows_the_models_tokens(layout, trained):
    from sae_core.features.config import IndexConfig
    from sae_core.features.index import FeatureIndex
    from sae_core.features.job import index_to_workspace

    name, model = layout
    ws, art, sae = trained
    index = FeatureIndex.open(index_to_workspace(ws, sae, name, HOOK, IndexConfig(n_tokens=1500, feature_map=False),
                                                 sae_source=art.name, model=model).path)
    live = int(torch.tensor([index.feature(i).count for i in range(16)]).argmax())
    view = index.feature(live)
    assert view.count > 0 and view.top
    vocab = {model.tokenizer.decode([i]) for i in range(model.cfg.d_vocab)}
    for ex in view.top[:3]:
        assert set(ex.tokens) <= vocab and ex.value == pytest.approx(max(ex.acts), rel=1e-5)
        # the value is the SAE's code of the model's activation at that token, recomputed here
        ids = index.tokens_NT[ex.sequence]
        with torch.no_grad():
            _, cache = model.run_with_cache(ids[ids >= 0][None], names_filter=[HOOK])
            again = sae.encode(cache[HOOK][0, ex.position])[live]
        assert float(again) == pytest.approx(ex.value, rel=1e-4)
    assert len(view.promoted) == index.config.n_logits


def test_the_folded_unembedding_applies_each_final_norm_as_the_model_does(layout):
    """Against each norm's own formula, with its weight set to random values: Gemma's RMSNorm
    multiplies by 1 + weight, Llama's and Qwen's by weight, GPT-2's LayerNorm centres first."""
    from sae_core.models.unembed import unembed_through_final_norm

    name, _ = layout
    model = load_model(name, device="cpu")  # its own copy: the norm's weight is changed below
    inner = getattr(model.ln_final, "_original_component", model.ln_final)
    with torch.no_grad():
        inner.weight.copy_(torch.randn(inner.weight.shape, generator=torch.Generator().manual_seed(0)))
        w = inner.weight.clone()
    scale = 1 + w if name.startswith("random:gemma") else w
    M = scale[:, None] * model.W_U.detach()
    if name == "random:gpt2-tiny":
        M = M - M.mean(0, keepdim=True)
    M = M - M.mean(1, keepdim=True)
    torch.testing.assert_close(unembed_through_final_norm(model), M, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, foreign", [("random:llama-3.2-1b-tiny", "blocks.0.attn.qkv.hook_out"),
                                           ("random:gpt2-tiny", "blocks.0.mlp.hook_pre_linear")])
def test_a_hook_of_another_family_is_refused_with_this_models_names(name, foreign):
    model = load_model(name, device="cpu")
    with pytest.raises(HookNotFoundError) as e:
        check_hook(model, foreign)
    msg = str(e.value)
    assert f"hook {foreign!r} does not exist in this model" in msg and "blocks.1.hook_resid_post" in msg
    assert model.original_model.config.architectures[0] in msg


def test_cached_generation_equals_uncached_generation(layout):
    """The KV cache reaches each layout's attention (``loading._cache_reaches_attention``): the
    logits of every cached step equal a full pass over the same prefix."""
    from sae_core.models.generation import _step

    name, model = layout
    ids = to_tokens(model, ["one two three four five"])
    with torch.no_grad():
        logits, cache = _step(model, ids, None)
        assert cache.get_seq_length() == ids.shape[1]
        for new in (7, 11, 13):
            ids = torch.cat([ids, torch.tensor([[new]])], dim=1)
            step_logits, cache = _step(model, ids[:, -1:], cache)
            full = model(ids)
            torch.testing.assert_close(step_logits[:, -1], full[:, -1], rtol=1e-4, atol=1e-4)


def test_a_random_layout_loads_in_the_dtype_asked_for():
    model = load_model("random:llama-3.2-1b-tiny", device="cpu", dtype="float64")
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert model(to_tokens(model, ["one two"])).dtype == torch.float64
