"""The hooks layer: several hooks in one pass, any width, with gradients when asked."""
import pytest
import torch

from sae_core.errors import HookNotFoundError, SAECoreError
from sae_core.models.hooks import capture
from sae_core.models.loading import to_tokens


def test_capture_many_hooks_equals_run_with_cache(tiny_a):
    toks = to_tokens(tiny_a, ["1 2 3 4 5", "January February March"])
    hooks = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "blocks.0.mlp.hook_post",
             "blocks.1.attn.hook_pattern"]
    got = capture(tiny_a, toks, hooks)
    with torch.no_grad():
        logits, cache = tiny_a.run_with_cache(toks, names_filter=hooks)
    for h in hooks:
        torch.testing.assert_close(got[h], cache[h])
    cfg = tiny_a.cfg
    assert got["blocks.1.attn.hook_z"].shape == (2, toks.shape[1], cfg.n_heads, cfg.d_head)
    assert "logits" not in got and not got[hooks[0]].requires_grad
    with_logits = capture(tiny_a, toks, hooks[:1], logits=True)
    torch.testing.assert_close(with_logits["logits"], logits)


def test_capture_with_gradients_differentiates_later_quantities(tiny_a):
    toks = to_tokens(tiny_a, ["1 2 3 4 5"])
    early, late = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"
    got = capture(tiny_a, toks, [early, late], grad=True, logits=True)
    target = got["logits"][0, -1].log_softmax(-1)[toks[0, -1]]
    (g_early,) = torch.autograd.grad(target, got[early], retain_graph=True)
    assert g_early.shape == got[early].shape and g_early[0, -1].abs().sum() > 0
    assert g_early[0, 0].abs().sum() > 0  # attention carries earlier positions into the last one
    (g_late,) = torch.autograd.grad(got[late][0, 2].sum(), got[early])
    assert g_late[0, 3:].abs().sum() == 0  # causal: position 2 reads nothing after it


def test_capture_refuses_unknown_hooks_by_name(tiny_a):
    toks = to_tokens(tiny_a, ["1 2 3"])
    with pytest.raises(HookNotFoundError, match="blocks.9.hook_resid_post"):
        capture(tiny_a, toks, ["blocks.0.hook_resid_post", "blocks.9.hook_resid_post"])
    assert issubclass(HookNotFoundError, SAECoreError)


def test_hooks_of_any_width_harvest_and_splice(tiny_a, tmp_path):
    """hook_z [B, T, H, d_head] and mlp.hook_post [B, T, d_mlp] are harvested per token (heads
    flattened), and an SAE of that width splices back in; attention patterns are refused."""
    from sae_core.activations import ActivationStore, harvest_activations
    from sae_core.models.loading import keep_mask_BT
    from sae_core.models.texts import corpus_texts
    from sae_core.sae.config import SAEConfig
    from sae_core.sae.registry import create_sae
    from sae_core.sae.splice import downstream_metrics, eval_tokens

    texts = corpus_texts(6, seed=5)
    cfg = tiny_a.cfg
    for hook, width in (("blocks.1.attn.hook_z", cfg.n_heads * cfg.d_head), ("blocks.0.mlp.hook_post", cfg.d_mlp)):
        store = harvest_activations(tiny_a, hook, texts, tmp_path / hook, model_name="zoo:tiny-a")
        assert ActivationStore.open(tmp_path / hook).d == width
        toks = to_tokens(tiny_a, texts)[:, :64]
        with torch.no_grad():
            _, cache = tiny_a.run_with_cache(toks, names_filter=[hook])
        tok = tiny_a.tokenizer
        mask = keep_mask_BT(toks, tok.pad_token_id, sorted(tok.all_special_ids), True)
        torch.testing.assert_close(store.read_all(), cache[hook].reshape(*toks.shape, -1)[mask])
        # an SAE that reconstructs exactly (z = relu([x, -x])) recovers all of the CE
        exact = create_sae(SAEConfig(arch="relu", d_in=width, d_sae=2 * width)).eval()
        with torch.no_grad():
            eye = torch.eye(width)
            exact.W_enc.copy_(torch.cat([eye, -eye], 1))
            exact.W_dec.copy_(torch.cat([eye, -eye], 0))
            exact.b_enc.zero_()
            exact.b_dec.zero_()
        m = downstream_metrics(tiny_a, exact, hook, eval_tokens(tiny_a, n_seqs=4))
        assert m.ce_loss_recovered == pytest.approx(1.0, abs=1e-4) and m.ce_zero > m.ce_clean
    with pytest.raises(SAECoreError, match="blocks.0.attn.hook_pattern' is not per token"):
        harvest_activations(tiny_a, "blocks.0.attn.hook_pattern", texts, tmp_path / "pat", model_name="zoo:tiny-a")


def test_patching_replaces_activations_everywhere_or_at_positions(tiny_a):
    from sae_core.models.hooks import patching

    clean = to_tokens(tiny_a, ["Tom done in March . Mia done in"])
    other = to_tokens(tiny_a, ["Sam done in June . Ben done in"])
    hook = "blocks.0.hook_resid_post"
    got_clean = capture(tiny_a, clean, [hook], logits=True)
    got_other = capture(tiny_a, other, [hook], logits=True)
    with torch.no_grad(), patching(tiny_a, {hook: lambda acts: acts}):
        torch.testing.assert_close(tiny_a(clean), got_clean["logits"], rtol=0, atol=0)  # identity: unchanged
    donor = got_other[hook]
    with torch.no_grad(), patching(tiny_a, {hook: lambda acts: donor}):
        # everything downstream of layer 0 reads the donor's residual: the donor's logits
        torch.testing.assert_close(tiny_a(clean), got_other["logits"], rtol=1e-5, atol=1e-5)
    last = clean.shape[1] - 1
    with torch.no_grad(), patching(tiny_a, {hook: lambda acts: donor}, positions=torch.tensor([last])):
        out = tiny_a(clean)
    # causal: earlier positions keep their clean logits; the patched last position does not
    torch.testing.assert_close(out[:, :last], got_clean["logits"][:, :last], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[:, last], got_clean["logits"][:, last], atol=1e-3)
    with pytest.raises(SAECoreError, match="returned shape"), torch.no_grad(), \
            patching(tiny_a, {hook: lambda acts: acts[:, :1]}):
        tiny_a(clean)
    with pytest.raises(HookNotFoundError):
        with patching(tiny_a, {"blocks.7.hook_resid_post": lambda a: a}):
            pass
