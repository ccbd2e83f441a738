"""Downstream metrics: the SAE spliced into a zoo model (CE/KL against hand references), errors,
device and dtype."""

import pytest
import torch

from sae_core.errors import SAECoreError
from sae_core.sae import SAEConfig, create_sae
from tests.helpers import sae_cfg


def test_splice_identity_and_zero_sae_give_reference_values(tiny_a):
    """An SAE that reconstructs exactly recovers 100%; the hand-computed CE matches the model's."""
    from sae_core.sae.splice import downstream_metrics, eval_tokens

    d = tiny_a.cfg.d_model
    cfg = SAEConfig(arch="relu", d_in=d, d_sae=2 * d)
    exact = create_sae(cfg).eval()
    with torch.no_grad():  # z = relu([x, -x]), x_hat = z_+ - z_-  reconstructs x exactly
        eye = torch.eye(d)
        exact.W_enc.copy_(torch.cat([eye, -eye], 1))
        exact.W_dec.copy_(torch.cat([eye, -eye], 0))
        exact.b_enc.zero_()
        exact.b_dec.zero_()
    toks = eval_tokens(tiny_a, n_seqs=8)
    m = downstream_metrics(tiny_a, exact, "blocks.0.hook_resid_post", toks)
    assert m.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert m.kl_sae == pytest.approx(0.0, abs=1e-6) and m.kl_recovered == pytest.approx(1.0, abs=1e-4)
    assert m.ce_zero > m.ce_clean
    # CE of the clean model by hand, over non-pad targets
    with torch.no_grad():
        logits = tiny_a(toks)
    logp = torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, toks[:, 1:, None]).squeeze(-1)
    pad = tiny_a.tokenizer.pad_token_id
    ok = toks[:, 1:] != pad
    assert m.ce_clean == pytest.approx(-logp[ok].mean().item(), rel=1e-6)

    dead = create_sae(cfg).eval()  # decodes everything to zero: no better than the floor
    with torch.no_grad():
        dead.b_enc.fill_(-1e6)
    m0 = downstream_metrics(tiny_a, dead, "blocks.0.hook_resid_post", toks)
    assert m0.ce_loss_recovered == pytest.approx(0.0, abs=1e-6)


def test_batch_rule_ce_matches_a_hand_reference(tiny_a):
    """The batch rule's CE: the training rule over consecutive groups of kept tokens of the whole
    evaluation text (groups cross forward batches), patched back where each token came from."""
    from sae_core.models.loading import keep_mask_BT
    from sae_core.sae.splice import downstream_metrics, eval_tokens

    hook, d = "blocks.0.hook_resid_post", tiny_a.cfg.d_model
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="batchtopk", d_in=d, d_sae=4 * d, k=4)).eval()
    with torch.no_grad():
        sae.threshold.fill_(0.5)
    toks = eval_tokens(tiny_a, n_seqs=7)
    m = downstream_metrics(tiny_a, sae, hook, toks, batch_size=3, batch_rule_tokens=100)
    tok = tiny_a.tokenizer
    mask = keep_mask_BT(toks, tok.pad_token_id, sorted(tok.all_special_ids), True)
    with torch.no_grad():
        _, cache = tiny_a.run_with_cache(toks, names_filter=[hook])
        x = cache[hook][mask]
        x_hat = torch.cat([sae.decode(sae.encode_batch_rule(x[s:s + 100])) for s in range(0, len(x), 100)])

        def put(acts, **_):
            out = acts.clone()
            out[mask] = x_hat
            return out
        with tiny_a.hooks(fwd_hooks=[(hook, put)]):
            logits = tiny_a(toks)
    logp = torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, toks[:, 1:, None]).squeeze(-1)
    ok = keep_mask_BT(toks, tok.pad_token_id, [], False)[:, 1:]
    assert m.ce_sae_batch_rule == pytest.approx(-logp[ok].mean().item(), rel=1e-5)
    assert m.ce_loss_recovered_batch_rule == pytest.approx(
        (m.ce_zero - m.ce_sae_batch_rule) / (m.ce_zero - m.ce_clean), rel=1e-9)
    assert m.ce_sae_batch_rule != pytest.approx(m.ce_sae, rel=1e-3)  # the rules differ here
    # an SAE without a batch rule reports none
    relu = create_sae(SAEConfig(arch="relu", d_in=d, d_sae=2 * d)).eval()
    assert "ce_loss_recovered_batch_rule" not in downstream_metrics(tiny_a, relu, hook, toks).to_json()


def test_splicing_an_sae_of_the_wrong_width_is_a_clear_error(tiny_a):
    from sae_core.sae.splice import downstream_metrics, eval_tokens

    sae = create_sae(SAEConfig(arch="topk", d_in=64, d_sae=128, k=4, hook_name="elsewhere")).eval()
    with pytest.raises(SAECoreError, match="width mismatch: blocks.0.hook_resid_post has d=128"):
        downstream_metrics(tiny_a, sae, "blocks.0.hook_resid_post", eval_tokens(tiny_a, n_seqs=2))


def test_the_splice_computes_on_the_saes_device_and_dtype_and_returns_the_models():
    """A trained SAE and the model may sit on different devices (a CUDA model, an SAE moved to
    the CPU: issue #11); the reconstruction goes to the SAE and comes back. Here: dtypes."""
    from sae_core.sae.splice import reconstruct

    sae = create_sae(sae_cfg("relu", dtype="float64")).eval()
    acts_BTD = torch.randn(2, 3, 16)
    seen = []
    sae.register_forward_pre_hook(lambda mod, args: seen.append((args[0].device, args[0].dtype)))
    out = reconstruct(sae, acts_BTD)
    assert seen == [(sae.device, torch.float64)]
    assert (out.shape, out.device, out.dtype) == (acts_BTD.shape, acts_BTD.device, torch.float32)
    torch.testing.assert_close(out, sae(acts_BTD.reshape(6, 16).double()).x_hat.float().reshape(2, 3, 16))
