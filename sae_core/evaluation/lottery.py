"""The activation lottery, measured: who wins a batch's slots, and what a Sampled-SAE's pool changes.

The Sampled-SAE paper (arXiv 2508.21324) motivates its pool by BatchTopK's "activation lottery":
the batch's K·B slots go to the largest activations, so rare latents of high magnitude win slots
that informative mid-frequency latents of smaller magnitude lose. Per SAE, on held-out batches of
its activations (``EVAL_BATCH`` tokens, as its metrics):

- per latent, the firing frequency (share of tokens with a nonzero code) and the mean activation
  when firing, under the SAE's training rule (BatchTopK family: the batch rule; TopK: per token;
  others: their inference rule): the scatter of frequency against magnitude;
- the lottery's winners: the top 1% of latents by mean activation when firing under plain
  BatchTopK on the SAE's own pre-activations (what the lottery would reward), and the share of the
  batch's kept slots they take, under plain BatchTopK (``top_share_batchtopk``) and under the
  SAE's own rule (``top_share``);
- for a Sampled-SAE, how the pool changes who wins: ``winners_overlap``, the share of the kept
  entries (token, latent) that plain BatchTopK on the same pre-activations keeps too.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable

import torch

from sae_core.sae.base import SAE
from sae_core.sae.batchtopk import batch_topk
from sae_core.sae.sampled import seeded_pools

TOP_SHARE = 0.01   # "the top 1% highest-magnitude latents" (issue #30)


@dataclass(frozen=True)
class LotteryResult:
    frequency: list[float]           # [d_sae] share of tokens on which the latent fires (its rule)
    mean_when_firing: list[float | None]  # [d_sae] None where it never fires
    top_latents: list[int]           # the lottery's winners (top 1% by magnitude under BatchTopK)
    top_share: float                 # their share of the kept slots under the SAE's rule
    top_share_batchtopk: float       # ... under plain BatchTopK on the same pre-activations
    winners_overlap: float           # share of the rule's kept entries that plain BatchTopK keeps
    rule: str                        # which rule the per-latent numbers describe
    n_tokens: int

    def to_dict(self) -> dict:
        return asdict(self)


def _training_rule(sae: SAE) -> tuple[str, callable]:
    if hasattr(sae, "encode_batch_rule"):
        return "batch rule (training)", sae.encode_batch_rule
    if sae.cfg.arch == "topk":
        return "top-k per token", sae.encode
    return "inference rule", sae.encode


@torch.no_grad()
def activation_lottery(sae: SAE, batches: Iterable[torch.Tensor]) -> LotteryResult:
    """The lottery's numbers over held-out ``batches`` of the SAE's input activations."""
    sae.eval()
    d_sae, k = sae.cfg.d_sae, sae.cfg.k
    rule, encode = _training_rule(sae)
    fires_S = torch.zeros(d_sae, dtype=torch.float64)
    mass_S = torch.zeros(d_sae, dtype=torch.float64)
    btk_fires_S, btk_mass_S = torch.zeros_like(fires_S), torch.zeros_like(fires_S)
    kept_rule, kept_btk, both, n = [], [], 0, 0
    with seeded_pools(sae):
        for x_ND in batches:
            x_ND = x_ND.to(sae.device, sae.W_enc.dtype)
            z_NS = encode(x_ND).float().cpu()
            btk_NS = batch_topk(torch.relu(sae.pre_acts(x_ND)), k * x_ND.shape[0]).float().cpu()
            on_NS, btk_on_NS = z_NS > 0, btk_NS > 0
            fires_S += on_NS.sum(0)
            mass_S += z_NS.sum(0)
            btk_fires_S += btk_on_NS.sum(0)
            btk_mass_S += btk_NS.sum(0)
            kept_rule.append(on_NS.sum(0))
            kept_btk.append(btk_on_NS.sum(0))
            both += int((on_NS & btk_on_NS).sum())
            n += x_ND.shape[0]
    btk_mean_S = btk_mass_S / btk_fires_S.clamp_min(1)
    n_top = max(1, math.ceil(TOP_SHARE * d_sae))
    top_T = btk_mean_S.topk(n_top).indices.sort().values
    slots_rule_S, slots_btk_S = torch.stack(kept_rule).sum(0).double(), torch.stack(kept_btk).sum(0).double()
    mean_S = mass_S / fires_S.clamp_min(1)
    return LotteryResult(
        frequency=(fires_S / max(n, 1)).tolist(),
        mean_when_firing=[float(m) if f > 0 else None for m, f in zip(mean_S.tolist(), fires_S.tolist())],
        top_latents=top_T.tolist(),
        top_share=float(slots_rule_S[top_T].sum() / slots_rule_S.sum().clamp_min(1)),
        top_share_batchtopk=float(slots_btk_S[top_T].sum() / slots_btk_S.sum().clamp_min(1)),
        winners_overlap=float(both / max(1.0, float(slots_rule_S.sum()))),
        rule=rule, n_tokens=n)
