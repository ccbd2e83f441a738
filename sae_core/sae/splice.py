"""Downstream metrics: the SAE's reconstruction spliced into the model at its hook.

CE loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean), where CE_zero replaces the hook's
activation with zeros (the floor) and CE_sae with the SAE's reconstruction. KL recovered =
(KL_zero - KL_sae) / KL_zero with KL(clean || patched) of the next-token distributions.

Positions: only the positions the SAE was trained on are patched; padding and BOS/special-token
positions keep their clean activations (as in harvesting with ``exclude_special``), and the loss
is averaged over next-token predictions whose target is not padding.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from sae_core.activations.harvest import corpus_texts, keep_mask_BT
from sae_core.errors import SAECoreError
from sae_core.models.loading import check_hook, to_tokens
from sae_core.sae.base import SAE


@dataclass(frozen=True)
class DownstreamMetrics:
    ce_clean: float
    ce_sae: float
    ce_zero: float
    ce_loss_recovered: float
    kl_sae: float
    kl_zero: float
    kl_recovered: float
    n_predictions: int

    def to_json(self) -> dict:
        return asdict(self)


def eval_tokens(model, n_seqs: int = 64, seed: int = 12345, context_size: int = 64) -> torch.Tensor:
    """``[n_seqs, <=context_size]`` held-apart corpus tokens (a seed the harvest default never uses)."""
    return to_tokens(model, corpus_texts(n_seqs, seed))[:, :context_size]


def reconstruct(sae: SAE, acts_BTD: torch.Tensor) -> torch.Tensor:
    """The SAE's reconstruction of a model's activations ``[..., d_in]``: computed on the SAE's
    device in its dtype, returned on the activations' device in theirs. The model and the SAE may
    sit on different devices (a model on CUDA, an SAE loaded on the CPU), so neither is assumed."""
    x_ND = acts_BTD.reshape(-1, acts_BTD.shape[-1]).to(sae.device, sae.W_enc.dtype)
    return sae(x_ND).x_hat.reshape(acts_BTD.shape).to(acts_BTD.device, acts_BTD.dtype)


@torch.no_grad()
def downstream_metrics(model, sae: SAE, hook: str, tokens_BT: torch.Tensor,
                       batch_size: int = 32, exclude_special: bool = True) -> DownstreamMetrics:
    """CE and KL recovered of ``sae`` spliced at ``hook`` over ``tokens_BT``."""
    check_hook(model, hook)
    tok = model.tokenizer
    special = sorted(set(getattr(tok, "all_special_ids", []) or []))
    device = next(model.parameters()).device
    sums = dict(ce_clean=0.0, ce_sae=0.0, ce_zero=0.0, kl_sae=0.0, kl_zero=0.0)
    n_pred = 0
    for s in range(0, tokens_BT.shape[0], batch_size):
        toks = tokens_BT[s:s + batch_size].to(device)
        mask_BT = keep_mask_BT(toks, tok.pad_token_id, special, exclude_special)
        target_ok_BT = keep_mask_BT(toks, tok.pad_token_id, [], False)[:, 1:]

        def patch(replace_with):
            def fn(acts_BTD, **_):  # transformer-lens passes hook=HookPoint
                if acts_BTD.shape[-1] != sae.cfg.d_in:
                    raise SAECoreError(
                        f"width mismatch: {hook} has d={acts_BTD.shape[-1]} but the SAE has "
                        f"d_in={sae.cfg.d_in}; pick the hook the SAE was trained on "
                        f"({sae.cfg.hook_name or 'unknown'})")
                new_BTD = replace_with(acts_BTD)
                return torch.where(mask_BT[..., None], new_BTD.to(acts_BTD.dtype), acts_BTD)
            with model.hooks(fwd_hooks=[(hook, fn)]):
                return model(toks)

        logits_clean = model(toks)
        logits_sae = patch(lambda a: reconstruct(sae, a))
        logits_zero = patch(torch.zeros_like)
        logp_clean = _next_logp(logits_clean)
        for name, logits in (("clean", logits_clean), ("sae", logits_sae), ("zero", logits_zero)):
            logp = logp_clean if name == "clean" else _next_logp(logits)
            ce_BT = -logp.gather(-1, toks[:, 1:, None]).squeeze(-1)
            sums[f"ce_{name}"] += ce_BT[target_ok_BT].sum().item()
            if name != "clean":
                kl_BT = (logp_clean.exp() * (logp_clean - logp)).sum(-1)
                sums[f"kl_{name}"] += kl_BT[target_ok_BT].sum().item()
        n_pred += int(target_ok_BT.sum())
    m = {k: v / max(1, n_pred) for k, v in sums.items()}
    denom_ce = m["ce_zero"] - m["ce_clean"]
    return DownstreamMetrics(
        ce_clean=m["ce_clean"], ce_sae=m["ce_sae"], ce_zero=m["ce_zero"],
        ce_loss_recovered=(m["ce_zero"] - m["ce_sae"]) / denom_ce if denom_ce else float("nan"),
        kl_sae=m["kl_sae"], kl_zero=m["kl_zero"],
        kl_recovered=(m["kl_zero"] - m["kl_sae"]) / m["kl_zero"] if m["kl_zero"] else float("nan"),
        n_predictions=n_pred)


def _next_logp(logits_BTV: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits_BTV[:, :-1].double(), dim=-1)
