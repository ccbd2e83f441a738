"""SAE initialisation and the last touches after training (``training``'s module doc says why
each is done this way): b_dec at the geometric median, decoder rows from data rows, the encoder's
fitted scale, the inference threshold calibrated at the final weights, the input scale folded in."""
from __future__ import annotations

import math

import torch

from sae_core.sae.base import SAE
from sae_core.sae.batchtopk import min_kept


def geometric_median(x_ND: torch.Tensor, iters: int = 30, eps: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances to the rows."""
    y = x_ND.mean(0)
    for _ in range(iters):
        w_N = 1.0 / (x_ND - y).norm(dim=1).clamp_min(eps)
        y_new = (w_N[:, None] * x_ND).sum(0) / w_N.sum()
        if (y_new - y).norm() < eps * (1 + y.norm()):
            return y_new
        y = y_new
    return y


@torch.no_grad()
def init_decoder_from_data(sae: SAE, x_ND: torch.Tensor, noise: float = 0.5,
                           generator: torch.Generator | None = None) -> None:
    """Point each decoder row at a random data row: W_dec[i] = unit(unit(x_j - b_dec) + noise * g/sqrt(d)),
    g Gaussian, rows j of ``x_ND`` distinct (drawn with replacement only when there are fewer rows
    than latents); then W_enc = W_dec^T.

    Why: random unit rows mostly point where the data has little variance, so under a batch-wide
    top-k they never win a slot and die before AuxK can revive them; rows drawn from the data start
    with a large activation on at least the tokens like the one they came from. The noise keeps
    rows drawn from the same data row apart. Draws from ``generator`` (a CPU one; None: torch's
    global RNG), so the result does not depend on the device.
    """
    n, d = x_ND.shape
    S = sae.cfg.d_sae
    rows = (torch.randperm(n, generator=generator)[:S] if n >= S
            else torch.randint(n, (S,), generator=generator)).to(x_ND.device)
    dirs = x_ND[rows] - sae.b_dec
    dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-12)
    dirs = dirs + noise * torch.randn(dirs.shape, generator=generator, dtype=dirs.dtype).to(dirs.device) / math.sqrt(d)
    sae.W_dec.copy_(dirs.to(sae.W_dec.dtype))
    sae.normalize_decoder()
    sae.W_enc.copy_(sae.W_dec.T)


@torch.no_grad()
def fit_encoder_scale(sae: SAE, x_ND: torch.Tensor) -> float:
    """Scale ``W_enc`` by the c in (0, 1] that makes the initial reconstruction least-squares
    optimal on ``x_ND`` (already scaled, ``b_dec`` already set); returns c.

    Why: at init each code is a token's projection on its latent's random unit direction, and the
    k (or, for BatchTopK, up to hundreds on high-norm tokens) codes a token gets are decoded along
    nearly random directions, so ||x_hat - b_dec|| is several times ||x - b_dec||. At init
    b_enc = 0 and every activation rule here (ReLU, TopK, BatchTopK, the Sampled pool, JumpReLU at
    threshold 0) is positively homogeneous, so W_enc -> c W_enc keeps the same latents active and
    scales y = x_hat - b_dec by exactly c; the best c is <x - b_dec, y> / <y, y>. The decoder keeps
    its unit-norm rows. One forward pass under the training rule; buffers it updates (thresholds,
    pool statistics) are restored, so the probe leaves no trace but the scale.
    """
    saved = {name: buf.clone() for name, buf in sae.named_buffers()}
    was_training = sae.training
    sae.train()
    y_ND = sae(x_ND).x_hat - sae.b_dec
    sae.train(was_training)
    for name, buf in sae.named_buffers():
        buf.copy_(saved[name])
    c = ((x_ND - sae.b_dec) * y_ND).sum() / (y_ND * y_ND).sum().clamp_min(1e-30)
    if not torch.isfinite(c) or c <= 0:  # nothing fired, or no useful direction: leave it
        return 1.0
    c = min(1.0, c.item())  # capped at the unscaled init: the fit is meant to remove overshoot
    sae.W_enc.mul_(c)
    return c


@torch.no_grad()
def calibrate_inference(sae: SAE, batches_ND: list[torch.Tensor], threshold: bool = True) -> None:
    """Set a BatchTopK-family SAE's inference rule at the final weights: the Sampled-SAE's pool
    (``calibrate_pool``), then the threshold.

    The training EMA of the smallest kept activation lags behind the weights (it still remembers
    early steps, whose cut-off was higher), which left inference L0 well below k in short runs.
    Averaging the training rule's cut-off over a few fresh batches at the final weights gives an
    inference L0 close to k. Needs eval mode (no EMA or pool statistics are updated).
    ``threshold=False`` keeps the training EMA (dictionary_learning's rule, ``TrainerConfig.threshold``).
    """
    if not hasattr(sae, "batch_rule_coords"):
        return
    if hasattr(sae, "calibrate_pool"):  # Sampled-SAE: its inference pool first (sampled.py)
        sae.calibrate_pool(batches_ND)
    if not threshold:
        return
    lows = []
    for x_ND in batches_ND:
        low = min_kept(sae.batch_rule_coords(sae.pre_acts(x_ND))[2])
        if torch.isfinite(low):
            lows.append(low)
    if lows:
        sae.threshold.copy_(torch.stack(lows).mean())


def estimate_scale(first_batch_ND: torch.Tensor) -> float:
    return math.sqrt(first_batch_ND.shape[1]) / first_batch_ND.norm(dim=1).mean().clamp_min(1e-12).item()


@torch.no_grad()
def fold_scale(sae: SAE, scale: float) -> None:
    """Make an SAE trained on s*x read raw x: codes shrink by s, the decoder rows stay unit-norm."""
    sae.b_enc.div_(scale)
    sae.b_dec.div_(scale)
    if hasattr(sae, "threshold"):
        sae.threshold.div_(scale)
