"""Downstream metrics: the SAE's reconstruction spliced into the model at its hook.

CE loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean), where CE_zero replaces the hook's
activation with zeros (the floor: "recovered" is measured against zero ablation) and CE_sae with
the SAE's reconstruction. KL recovered = (KL_zero - KL_sae) / KL_zero with KL(clean || patched) of
the next-token distributions.

Two rules for BatchTopK-family SAEs (issue #11), as for FVU (``runs.evaluate_sae``): the
inference rule encodes each token alone (``ce_sae``, ...); the batch rule (``*_batch_rule``)
applies the training rule to batches of ``batch_rule_tokens`` kept tokens of the evaluation text,
in order. The batch rule needs every token's activation before any is patched, so it takes one
capture pass (``capture_at_hook``) ahead of the patched passes.

Positions: only the positions the SAE was trained on are patched; padding and BOS/special-token
positions keep their clean activations (as in harvesting with ``exclude_special``), and the loss
is averaged over next-token predictions whose target is not padding.

Text: ``eval_tokens`` reads held-out documents of the text the SAE was trained on
(``TextSource.eval_documents``), so a hub model's figure is measured on the user's corpus when
the SAE was trained on one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from sae_core.errors import SAECoreError
from sae_core.models.hooks import capture_at_hook
from sae_core.models.loading import check_hook, keep_mask_BT, to_tokens
from sae_core.models.texts import TextSource
from sae_core.sae.base import SAE
from sae_core.sae.sampled import seeded_pools


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
    ce_sae_batch_rule: float | None = None
    ce_loss_recovered_batch_rule: float | None = None
    kl_sae_batch_rule: float | None = None
    kl_recovered_batch_rule: float | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def eval_tokens(model, text: TextSource | None = None, n_seqs: int = 64,
                context_size: int = 64) -> torch.Tensor:
    """``[n_seqs, <=context_size]`` tokens of held-out documents of ``text`` (default: the zoo
    corpus, from a seed the harvest default never uses)."""
    return to_tokens(model, (text or TextSource()).eval_documents(n_seqs))[:, :context_size]


def reconstruct(sae: SAE, acts_BTD: torch.Tensor) -> torch.Tensor:
    """The SAE's reconstruction of a model's per-token activations ``[B, T, ...]`` (trailing
    dimensions flattened to d_in, as harvested: ``hook_z``'s heads): computed on the SAE's
    device in its dtype, returned in the activations' shape, device and dtype. The model and the
    SAE may sit on different devices (a model on CUDA, an SAE loaded on the CPU)."""
    x_ND = acts_BTD.reshape(acts_BTD.shape[0] * acts_BTD.shape[1], -1).to(sae.device, sae.W_enc.dtype)
    return sae(x_ND).x_hat.reshape(acts_BTD.shape).to(acts_BTD.device, acts_BTD.dtype)


def _check_width(sae: SAE, hook: str, acts_BTD: torch.Tensor) -> None:
    width = acts_BTD[0, 0].numel()
    if width != sae.cfg.d_in:
        raise SAECoreError(
            f"width mismatch: {hook} has d={width} but the SAE has "
            f"d_in={sae.cfg.d_in}; pick the hook the SAE was trained on "
            f"({sae.cfg.hook_name or 'unknown'})")


def _batches(tokens_BT, batch_size, device, tok, special, exclude_special):
    """(tokens, positions to patch, targets that count) per forward batch."""
    for s in range(0, tokens_BT.shape[0], batch_size):
        toks = tokens_BT[s:s + batch_size].to(device)
        yield (toks, keep_mask_BT(toks, tok.pad_token_id, special, exclude_special),
               keep_mask_BT(toks, tok.pad_token_id, [], False)[:, 1:])


@torch.no_grad()
def batch_rule_reconstructions(model, sae: SAE, hook: str, batches, batch_rule_tokens: int) -> torch.Tensor:
    """``[N, d_in]``: the training rule's reconstruction of every patched position of ``batches``
    (in order), over consecutive groups of ``batch_rule_tokens`` positions."""
    rows = []
    with capture_at_hook(model, hook) as grab:
        for toks, mask_BT, _ in batches:
            acts_BTD = grab(toks)
            _check_width(sae, hook, acts_BTD)
            rows.append(acts_BTD[mask_BT].to(sae.device, sae.W_enc.dtype))
    x_ND = torch.cat(rows)
    return torch.cat([sae.decode(sae.encode_batch_rule(x_ND[s:s + batch_rule_tokens]))
                      for s in range(0, x_ND.shape[0], batch_rule_tokens)])


@torch.no_grad()
def downstream_metrics(model, sae: SAE, hook: str, tokens_BT: torch.Tensor,
                       batch_size: int = 32, exclude_special: bool = True,
                       batch_rule_tokens: int | None = 4096) -> DownstreamMetrics:
    """CE and KL recovered of ``sae`` spliced at ``hook`` over ``tokens_BT``; with the batch rule
    too when the SAE has one and ``batch_rule_tokens`` is set (module doc)."""
    check_hook(model, hook)
    tok = model.tokenizer
    special = sorted(set(getattr(tok, "all_special_ids", []) or []))
    device = next(model.parameters()).device
    batches = list(_batches(tokens_BT, batch_size, device, tok, special, exclude_special))
    by_batch = hasattr(sae, "encode_batch_rule") and batch_rule_tokens is not None
    if by_batch:
        with seeded_pools(sae):
            rows_ND = batch_rule_reconstructions(model, sae, hook, batches, batch_rule_tokens)
    names = ("clean", "sae", "zero") + (("batch",) if by_batch else ())
    sums = {f"{m}_{n}": 0.0 for n in names for m in ("ce", "kl")}
    n_pred = row = 0
    for toks, mask_BT, target_ok_BT in batches:
        n_rows = int(mask_BT.sum())

        def patch(replace_with):
            def fn(acts_BTD, **_):  # transformer-lens passes hook=HookPoint
                _check_width(sae, hook, acts_BTD)
                new_BTD = replace_with(acts_BTD).to(acts_BTD.dtype)
                keep = mask_BT.view(*mask_BT.shape, *[1] * (acts_BTD.ndim - 2))
                return torch.where(keep, new_BTD, acts_BTD)
            with model.hooks(fwd_hooks=[(hook, fn)]):
                return model(toks)

        def scattered(acts_BTD, rows_ND=rows_ND[row:row + n_rows] if by_batch else None):
            out_BTD = acts_BTD.clone()
            out_BTD[mask_BT] = rows_ND.to(acts_BTD.device, acts_BTD.dtype).reshape(-1, *acts_BTD.shape[2:])
            return out_BTD

        logits = {"clean": model(toks), "sae": patch(lambda a: reconstruct(sae, a)),
                  "zero": patch(torch.zeros_like)}
        if by_batch:
            logits["batch"] = patch(scattered)
        row += n_rows
        logp_clean = _next_logp(logits["clean"])
        for name in names:
            logp = logp_clean if name == "clean" else _next_logp(logits[name])
            ce_BT = -logp.gather(-1, toks[:, 1:, None]).squeeze(-1)
            sums[f"ce_{name}"] += ce_BT[target_ok_BT].sum().item()
            kl_BT = (logp_clean.exp() * (logp_clean - logp)).sum(-1)
            sums[f"kl_{name}"] += kl_BT[target_ok_BT].sum().item()
        n_pred += int(target_ok_BT.sum())
    m = {k: v / max(1, n_pred) for k, v in sums.items()}
    denom_ce = m["ce_zero"] - m["ce_clean"]

    def ce_rec(ce):
        return (m["ce_zero"] - ce) / denom_ce if denom_ce else float("nan")

    def kl_rec(kl):
        return (m["kl_zero"] - kl) / m["kl_zero"] if m["kl_zero"] else float("nan")
    extra = {}
    if by_batch:
        extra = dict(ce_sae_batch_rule=m["ce_batch"], ce_loss_recovered_batch_rule=ce_rec(m["ce_batch"]),
                     kl_sae_batch_rule=m["kl_batch"], kl_recovered_batch_rule=kl_rec(m["kl_batch"]))
    return DownstreamMetrics(
        ce_clean=m["ce_clean"], ce_sae=m["ce_sae"], ce_zero=m["ce_zero"],
        ce_loss_recovered=ce_rec(m["ce_sae"]), kl_sae=m["kl_sae"], kl_zero=m["kl_zero"],
        kl_recovered=kl_rec(m["kl_sae"]), n_predictions=n_pred, **extra)


def _next_logp(logits_BTV: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits_BTV[:, :-1].double(), dim=-1)
