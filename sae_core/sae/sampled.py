"""Sampled-SAE (arXiv 2508.21324, "Distribution-Aware Feature Selection for SAEs").

Training rule for a batch of B tokens, with a = pre * (pre > theta) of shape [B, d_sae], theta the
BatchTopK threshold (the EMA of the smallest kept activation; 0, so a = relu(pre), until the first
batch sets it; see "Scores read what the rule can keep" below):

1. Score every latent column j over the batch:
   - ``l2``:      s_j = ||a[:, j]||_2 = sqrt(sum_i a_ij^2)
   - ``l2sq``:    s_j = ||a[:, j]||_2^2 = sum_i a_ij^2, the paper's squared-L2 rule (issue #30): the
                  same order as ``l2``, so the same pool under ``pool_rule="top"``; a different draw
                  under ``pool_rule="sample"``, which weights latents by the score itself
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
BatchTopK threshold theta (EMA of the smallest kept activation). At the end of training both are
recalibrated at the final weights (``calibrate_pool``, then the threshold): the EMA remembers
latents that were in early pools but left them, and those fire hard at inference while the batch
rule never picks them (entropy scoring, l=16, demo activations: held-out FVU 1.05 at inference
against 0.30 with the batch rule before this calibration existed; 0.15 against 0.26 with it,
``bench/sae_trainer_variants.py``). Latents outside the pool were
never trained to be sparse, so letting them fire would flood the code. This is a JumpReLU with
per-latent thresholds (theta in the pool, +inf outside), which is how it exports to SAELens.
At l=1 it is exactly "every token draws from K global latents"; when the pool covers every
latent it is BatchTopK's inference rule. ``encode_batch_rule`` applies the training rule to a
given batch instead.

AuxK and the pool (issue #11): a latent's silence counts towards "dead" only while it is in the
training pool (``aux_eligible``; the trainer's clock stops outside it), so AuxK revives pool
latents that lose every BatchTopK slot and leaves alone the latents the pool excludes by design.
Before, at small l about 90% of the dictionary was "dead" and AuxK trained it to reconstruct the
residual. Those latents then fire on many tokens of a batch, which is exactly what entropy scoring
rewards, so they entered the pool with magnitudes fitted to the residual, not to the
reconstruction; training error climbed back late in the run. Demo sweep settings (zoo:tiny-a
layer 1, K=16, d_sae=512, 1M tokens, seed 0), held-out FVU at l = 1, 2, 4:
before 0.430, 0.576, 1.264 (AuxK loss up to 44, against 1.0 for L2 scoring); AuxK off entirely
0.364, 0.307, 0.087; with this rule 0.364, 0.307, 0.087 (AuxK up to 1.1). The other suspects,
measured on the same runs (``bench/sampled_entropy_causes.py``): pool churn is high for entropy
(11-15% of the pool new each batch, L2 0.5%), but pools chosen on scores smoothed over batches
(EMA 0.9) cut it to 3-4% and did not help (FVU 0.349 at l=1, 0.241 at l=4); no pool held a
near-zero column (none below 1% of the pool's median mass); and the b_dec drift (norm 4-6 in
scaled units against 2 for L2) remains after the fix, a symptom of dense pool latents, not the
cause. The late rise of the error began near the start of the learning-rate decay but does not
happen without the out-of-pool AuxK.

Scores read what the rule can keep (issue #11): with AuxK fixed, entropy runs still learned far
more slowly than L2 (``bench/sae_throughput.py`` small size, 23 steps at a constant lr: held-out
FVU 0.851 against 0.480; after 200 steps 0.573 against 0.098). Cause: the entropy of all of
relu(pre) ranks untrained latents first. A random latent spreads weak values over half the batch
(near-maximal entropy); a latent that learns a feature fires strongly on some tokens over a weak
tail, and its entropy falls. So each batch's pool traded the latents being trained for untrained
ones: pool churn stayed at 20-40% a batch for 200 steps (L2: mostly under 2%), and after 200 steps with
the pool held fixed, 7 of the 128 trained latents were still in entropy's top 128 (median rank
993 of 2048; L2's top 128 held 75). Held fixed, that same entropy pool reached FVU 0.053, better
than L2. The weak tail below the BatchTopK cut is never kept, so it reconstructs nothing; scored
on the entries above theta, a column's entropy measures how evenly the latent spreads what it
can contribute, which is the shared structure the rule means to reward, and trained latents keep
their place. Same benchmark: FVU 0.653 at 23 steps (1.36x L2's 0.480, which the floor leaves
as it was) and 0.063 at 200 steps (L2 0.098). Smoothing the scores over batches (EMA 0.9 / 0.99)
cut the churn but not the cause: 0.834 / 0.763 at 23 steps, 0.551 / 0.533 at 200.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch

from sae_core import distributed
from sae_core.sae import kernels
from sae_core.sae.batchtopk import BatchTopKSAE, batch_topk


# Values per row chunk in ``latent_scores`` (4 MiB in fp32). Dense relu(pre), p and log p copies
# of a [4096, 16384] batch are fresh 256 MiB allocations that the OS maps and faults in on every
# step; chunks in reused buffers avoid that and stay in cache (~5x faster on the 2-core CPU).
# Much smaller chunks are no faster unloaded and slower when the cores are shared: every op
# synchronises the threads, and there would be hundreds of ops (issue #3).
_CHUNK_VALUES = 2**20


def _clamped_chunks(acts_NS: torch.Tensor, floor: float | torch.Tensor, fill: float, scratch: bool = False
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Successive row chunks ``[R, d_sae]`` of ``acts`` with every entry <= ``floor`` replaced by
    ``fill`` (one fused pass, ``threshold``), each with a scratch chunk of the same shape when
    asked; both live in buffers reused from chunk to chunk (valid until the next chunk is drawn;
    the caller may overwrite them). Half-precision input is scored in float32 (``_score_dtype``).
    A tensor ``floor`` (0-dim, on the device: a GPU's, never read on the host) takes a ``where``."""
    n, d_sae = acts_NS.shape
    rows = max(1, min(n, _CHUNK_VALUES // max(1, d_sae)))
    dtype = _score_dtype(acts_NS.dtype)
    buf_RS = acts_NS.new_empty(rows, d_sae, dtype=dtype)
    scratch_RS = acts_NS.new_empty(rows, d_sae, dtype=dtype) if scratch else None
    for start in range(0, n, rows):
        chunk_RS = acts_NS[start:start + rows]
        r = chunk_RS.shape[0]
        if torch.is_tensor(floor):
            fill_t = chunk_RS.new_tensor(fill)
            a_RS = torch.where(chunk_RS > floor, chunk_RS, fill_t, out=buf_RS[:r]) if dtype == acts_NS.dtype \
                else buf_RS[:r].copy_(torch.where(chunk_RS > floor, chunk_RS, fill_t))
        elif dtype == acts_NS.dtype:
            a_RS = torch.ops.aten.threshold.out(chunk_RS, floor, fill, out=buf_RS[:r])
        else:  # out= cannot convert dtypes: copy (converting), then threshold in place
            a_RS = torch.nn.functional.threshold_(buf_RS[:r].copy_(chunk_RS), floor, fill)
        yield a_RS, (scratch_RS[:r] if scratch else None)


def _score_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 activations are scored in float32: their smallest normal value (6e-5 for
    float16) would no longer be negligible as the entropy's floor, nor their sums exact enough."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def latent_scores(acts_NS: torch.Tensor, scoring: str, floor: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Per-latent score ``[d_sae]`` of the columns of acts * (acts > floor) (see module doc:
    the pool passes the BatchTopK threshold as ``floor``; ``floor=0`` is relu(acts)).

    ``acts_NS [N, d_sae]`` may be raw pre-activations: only the entries above ``floor`` (>= 0)
    enter the scores, so the fast path passes ``pre`` without a relu copy. Entropy takes one pass of a*log2(a) through
    H_j = -sum_i p_ij log p_ij = ln 2 * (log2 m_j - (sum_i a_ij log2 a_ij) / m_j)   (p_ij = a_ij / m_j),
    instead of materialising p and log p; log2 is the cheaper transcendental on CPU (0.81-0.86
    against 0.87-1.24 ns a value, ``bench/sae_kernel_parts.py``), and the per-element logs are
    most of the entropy score's cost.
    """
    d_sae, dtype = acts_NS.shape[1], _score_dtype(acts_NS.dtype)
    floor = floor.clamp_min(0.0) if torch.is_tensor(floor) else max(0.0, float(floor))
    if scoring in ("l2", "l2sq"):
        sumsq_S = acts_NS.new_zeros(d_sae, dtype=dtype)
        for a_RS, _ in _clamped_chunks(acts_NS, floor, 0.0):
            sumsq_S += torch.linalg.vecdot(a_RS, a_RS, dim=0)
        sumsq_S = distributed.all_sum_(sumsq_S)  # data-parallel: over the global batch
        return sumsq_S.sqrt_() if scoring == "l2" else sumsq_S
    # 0 log 0 = 0: entries <= floor become the smallest normal float, not 0 (log2 of an exact 0
    # is a slow path on CPU, ~12x slower: 10.3 against 0.86 ns), so the cut and the log's guard
    # are one pass. Each such entry adds tiny to m_j and tiny*log2(tiny) (~ -1.5e-36) to
    # the sum: far below float resolution unless the column has no mass at all, which the mass
    # test below catches.
    tiny = torch.finfo(dtype).tiny
    mass_S, alog_S = acts_NS.new_zeros(d_sae, dtype=dtype), acts_NS.new_zeros(d_sae, dtype=dtype)
    for a_RS, log_RS in _clamped_chunks(acts_NS, floor.clamp_min(tiny) if torch.is_tensor(floor) else max(floor, tiny),
                                        tiny, scratch=True):
        mass_S += a_RS.sum(0)
        alog_S += torch.log2(a_RS, out=log_RS).mul_(a_RS).sum(0)
    if distributed.active() is not None:  # the global batch's sums (one collective)
        both_2S = distributed.all_sum_(torch.stack([mass_S, alog_S]))
        mass_S, alog_S = both_2S[0], both_2S[1]
    entropy_S = math.log(2) * (mass_S.log2() - alog_S / mass_S)
    has_mass_S = mass_S > 2 * acts_NS.shape[0] * distributed.world() * tiny  # more than the clamped floor alone
    return torch.where(has_mass_S, entropy_S, torch.full_like(entropy_S, float("-inf")))


@contextmanager
def seeded_pools(sae, seed: int = 0) -> Iterator[None]:
    """Within the block, a Sampled-SAE draws ``pool_rule="sample"`` pools from a generator seeded
    with ``seed`` (then its own generator is back), so evaluations are reproducible whatever
    torch's global RNG holds; other SAEs are left as they are."""
    if not hasattr(sae, "pool_generator"):
        yield
        return
    before, sae.pool_generator = sae.pool_generator, torch.Generator().manual_seed(seed)
    try:
        yield
    finally:
        sae.pool_generator = before


def select_pool(scores_S: torch.Tensor, pool_size: int, rule: str,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices ``[pool_size]`` of the pool (see module doc). ``generator``: the draw's RNG for
    ``rule="sample"`` (None: torch's global one); its device may differ from the scores'."""
    if rule == "top":
        return scores_S.topk(pool_size, sorted=False).indices
    weights_S = torch.nan_to_num(scores_S, neginf=0.0).clamp_min(0.0)
    # A tiny floor lets the draw complete when fewer than pool_size latents have any mass.
    weights_S = weights_S + 1e-12 * (weights_S.max() + 1e-12)
    if generator is None or generator.device == weights_S.device:
        return torch.multinomial(weights_S, pool_size, replacement=False, generator=generator)
    return torch.multinomial(weights_S.to(generator.device), pool_size, replacement=False,
                             generator=generator).to(weights_S.device)


# Bumped when the training rule changes, so workspaces retrain their Sampled-SAEs instead of
# reusing ones trained under the old rule (2: scores read the entries above theta, issue #11).
RULE_REVISION = 2


class SampledSAE(BatchTopKSAE):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.register_buffer("pool_freq", torch.zeros(cfg.d_sae, dtype=self.W_enc.dtype))
        # the trainer's own RNG for pool_rule="sample" (a CPU generator, whose state checkpoints
        # keep, so a resumed run draws the same pools on any device); None: torch's global RNG
        self.pool_generator: torch.Generator | None = None
        self._train_pool_P: torch.Tensor | None = None  # the last training batch's pool

    def aux_eligible(self) -> torch.Tensor | None:
        """The last training batch's pool: only its latents can fire, so only their silence makes
        them dead for AuxK (module doc, "AuxK and the pool")."""
        if self._train_pool_P is None:
            return None
        mask_S = torch.zeros(self.cfg.d_sae, dtype=torch.bool, device=self._train_pool_P.device)
        return mask_S.index_fill_(0, self._train_pool_P, True)

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
    def calibrate_pool(self, batches_ND: list[torch.Tensor]) -> None:
        """Set ``pool_freq`` to the fraction of these batches whose pool (at the current weights)
        holds each latent; the training EMA, scaled by 1e-3, only breaks ties. Eval mode."""
        hits_S = torch.zeros_like(self.pool_freq)
        for x_ND in batches_ND:
            hits_S[self._pool(self.pre_acts(x_ND))] += 1
        self.pool_freq.copy_(hits_S / max(1, len(batches_ND)) + 1e-3 * self.pool_freq)

    @torch.no_grad()
    def encode_coords(self, x_ND, out=None):
        """Inference reads only the K*l pool latents: the encoder runs on those columns alone."""
        pool_P = self.inference_pool().nonzero().squeeze(1)  # ascending
        pre_NP = torch.addmm(self.b_enc[pool_P], x_ND - self.b_dec, self.W_enc[:, pool_P])
        rows_M, slot_M, vals_M = self._coords_above(pre_NP, self.threshold.clamp_min(0))
        return rows_M, pool_P[slot_M], vals_M

    @torch.no_grad()
    def _pool(self, acts_NS: torch.Tensor) -> torch.Tensor:
        """Indices ``[K*l]`` of this batch's pool, scored on the activations above the BatchTopK
        threshold (module doc, "Scores read what the rule can keep"; all of relu(acts) before
        the threshold is set; ``acts`` may be pre or relu(pre)); in training, also updates
        ``pool_freq``."""
        cfg = self.cfg
        if kernels.defer_host_reads(acts_NS):  # the floor stays on the device: reading it makes a GPU wait
            floor = torch.where(self.threshold_initialized, self.threshold.clamp_min(0), 0.0)
        else:
            floor = float(self.threshold) if bool(self.threshold_initialized) else 0.0
        pool_P = select_pool(latent_scores(acts_NS, cfg.scoring, floor), cfg.pool_size, cfg.pool_rule,
                             self.pool_generator)
        # Ascending latent order: gathering sorted columns is faster (memory order), and ties at
        # the BatchTopK cut then go to the lowest (token, latent), whatever order topk returned.
        pool_P = pool_P.sort().values
        if self.training:  # pool_freq <- m pool_freq + (1-m) [j in pool]
            if self._train_pool_P is not None and self._train_pool_P.numel() == pool_P.numel():
                # both sorted: the fraction of this pool that the previous batch's lacked
                kept = torch.isin(pool_P, self._train_pool_P, assume_unique=True).sum()
                # a tensor on a GPU (the trainer reads it with the step's other numbers)
                churn = 1.0 - kept / pool_P.numel()
                self.pool_churn = churn if kernels.defer_host_reads(churn) else churn.item()
            self._train_pool_P = pool_P
            m = cfg.threshold_momentum
            self.pool_freq.mul_(m).index_add_(0, pool_P, self.pool_freq.new_full(pool_P.shape, 1 - m))
        return pool_P

    def batch_select(self, relu_NS: torch.Tensor) -> torch.Tensor:
        pool_P = self._pool(relu_NS)
        in_pool_NP = relu_NS[:, pool_P]
        kept_NP = batch_topk(in_pool_NP, self.cfg.k * relu_NS.shape[0])
        return torch.zeros_like(relu_NS).index_copy(1, pool_P, kept_NP)

    @torch.no_grad()
    def batch_rule_coords(self, pre_NS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fast path's training rule: the same pool and the same cut as ``batch_select``.
        Works on ``pre`` itself (no dense relu copy): the scores read only relu(pre), and
        ``batch_topk_indices`` keeps only positive entries, where pre = relu(pre). In training
        mode the pool statistics are updated (``_pool``); the threshold never is."""
        pool_P = self._pool(pre_NS)
        in_pool_NP = pre_NS.index_select(1, pool_P)  # [N, K*l], a few % of the batch
        flat_M = kernels.batch_topk_indices(in_pool_NP, self.cfg.k * pre_NS.shape[0])
        rows_M, slot_M = flat_M // pool_P.numel(), flat_M % pool_P.numel()
        return rows_M, pool_P[slot_M], in_pool_NP.reshape(-1).index_select(0, flat_M)
