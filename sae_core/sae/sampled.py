"""Sampled-SAE (arXiv 2508.21324, "Distribution-Aware Feature Selection for SAEs").

Training rule for a batch of B tokens, with a = relu(pre) of shape [B, d_sae]:

1. Score every latent column j over the batch:
   - ``l2``:      s_j = ||a[:, j]||_2 = sqrt(sum_i a_ij^2)
   - ``entropy``: with the column's activation mass m_j = sum_i a_ij and p_ij = a_ij / m_j,
                  s_j = H_j = -sum_i p_ij log p_ij (0 log 0 = 0). High entropy means the latent's
                  mass is spread over many tokens of the batch (shared structure); the
                  highest-entropy latents are kept. A column with no mass scores -inf.
2. Pool: the K*l latents with the highest scores (``pool_rule="top"``), or K*l latents drawn
   without replacement with probability proportional to the score (``pool_rule="sample"``; for
   entropy, proportional to H_j). K*l is clamped to d_sae, where the rule is plain BatchTopK.
3. BatchTopK inside the pool: the K*B largest activations of a[:, pool] are kept.

So with l = 1 at most K distinct latents are active in a batch; as l grows the pool stops
binding and the rule becomes BatchTopK.

Inference (documented choice): single tokens or small batches have no meaningful batch
statistics, so the pool cannot be recomputed per batch. Instead training keeps ``pool_freq``, an
EMA of how often each latent was in the pool; at inference the K*l latents with the highest
pool frequency form a fixed pool, and inside it a latent fires when its activation exceeds the
BatchTopK threshold theta (EMA of the smallest kept activation). Latents outside the pool were
never trained to be sparse, so letting them fire would flood the code. This is a JumpReLU with
per-latent thresholds (theta in the pool, +inf outside), which is how it exports to SAELens.
At l=1 it is exactly "every token draws from K global latents"; when the pool covers every
latent it is BatchTopK's inference rule. ``encode_batch_rule`` applies the training rule to a
given batch instead.
"""
from __future__ import annotations

import torch

from sae_core.sae import kernels
from sae_core.sae.batchtopk import BatchTopKSAE, batch_topk


def latent_scores(acts_NS: torch.Tensor, scoring: str) -> torch.Tensor:
    """Per-latent score ``[d_sae]`` of non-negative activations ``[N, d_sae]`` (see module doc)."""
    if scoring == "l2":
        return (acts_NS * acts_NS).sum(dim=0).sqrt()  # = norm(dim=0), in half norm's time on CPU
    mass_S = acts_NS.sum(dim=0)
    p_NS = acts_NS / mass_S.clamp_min(torch.finfo(acts_NS.dtype).tiny)
    entropy_S = -(p_NS * torch.log(p_NS.clamp_min(torch.finfo(acts_NS.dtype).tiny))).sum(dim=0)
    return torch.where(mass_S > 0, entropy_S, torch.full_like(entropy_S, float("-inf")))


def select_pool(scores_S: torch.Tensor, pool_size: int, rule: str) -> torch.Tensor:
    """Indices ``[pool_size]`` of the pool (see module doc)."""
    if rule == "top":
        return scores_S.topk(pool_size, sorted=False).indices
    weights_S = torch.nan_to_num(scores_S, neginf=0.0).clamp_min(0.0)
    # A tiny floor lets the draw complete when fewer than pool_size latents have any mass.
    weights_S = weights_S + 1e-12 * (weights_S.max() + 1e-12)
    return torch.multinomial(weights_S, pool_size, replacement=False)


class SampledSAE(BatchTopKSAE):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.register_buffer("pool_freq", torch.zeros(cfg.d_sae, dtype=self.W_enc.dtype))

    def inference_pool(self) -> torch.Tensor:
        """Boolean ``[d_sae]``: the K*l latents most often in the training pool."""
        mask_S = torch.zeros(self.cfg.d_sae, dtype=torch.bool, device=self.pool_freq.device)
        return mask_S.index_fill_(0, self.pool_freq.topk(self.cfg.pool_size).indices, True)

    def inference_thresholds(self) -> torch.Tensor:
        """Per-latent JumpReLU thresholds ``[d_sae]`` equivalent to the inference rule."""
        inf = torch.full_like(self.pool_freq, float("inf"))
        return torch.where(self.inference_pool(), self.threshold.expand_as(inf), inf)

    def activate(self, pre_NS: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().activate(pre_NS)
        relu_NS = torch.relu(pre_NS)
        return relu_NS * (relu_NS > self.inference_thresholds())

    @torch.no_grad()
    def _pool(self, relu_NS: torch.Tensor) -> torch.Tensor:
        """Indices ``[K*l]`` of this batch's pool; in training, also updates ``pool_freq``."""
        cfg = self.cfg
        pool_P = select_pool(latent_scores(relu_NS, cfg.scoring), cfg.pool_size, cfg.pool_rule)
        if self.training:
            in_pool_S = torch.zeros_like(self.pool_freq).index_fill_(0, pool_P, 1.0)
            m = cfg.threshold_momentum
            self.pool_freq.mul_(m).add_((1 - m) * in_pool_S)
        return pool_P

    def batch_select(self, relu_NS: torch.Tensor) -> torch.Tensor:
        pool_P = self._pool(relu_NS)
        in_pool_NP = relu_NS[:, pool_P]
        kept_NP = batch_topk(in_pool_NP, self.cfg.k * relu_NS.shape[0])
        return torch.zeros_like(relu_NS).index_copy(1, pool_P, kept_NP)

    def select_active(self, pre_NS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fast path's training rule: the same pool and the same cut as ``batch_select``."""
        relu_NS = torch.relu(pre_NS)
        pool_P = self._pool(relu_NS)
        in_pool_NP = relu_NS[:, pool_P]
        flat_M = kernels.batch_topk_indices(in_pool_NP, self.cfg.k * pre_NS.shape[0])
        self._update_threshold(in_pool_NP.reshape(-1).index_select(0, flat_M))
        rows_M, slot_M = flat_M // pool_P.numel(), flat_M % pool_P.numel()
        return rows_M, pool_P[slot_M]
