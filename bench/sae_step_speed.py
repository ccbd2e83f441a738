"""Train-step throughput of our k-sparse SAEs, plain vs fast kernels (issue #3).

One step is what ``train_sae`` does per batch: forward, MSE (+ AuxK when latents are dead),
backward, removing the decoder-parallel gradient, Adam, decoder renorm. The trainer's own helpers
are used, on random activations (the cost does not depend on the data).

Timings on a shared machine are noisy, so the configurations are interleaved round by round and
each keeps its best round; compare numbers from one run only.

    .venv/bin/python bench/sae_step_speed.py [--rounds 3] [--threads 2] [--sizes small,large]
        [--modes plain,fast] [--archs topk,batchtopk,sampled-l2,sampled-entropy]

The last column is each configuration's step time over our fast BatchTopK's at the same size
(issue #3's target for Sampled-SAE: <= 1.15x). Every architecture gets the same random dead
latents here; ``sae_run_step_ratio.py`` measures the ratio over real runs, where the
Sampled-SAE's pool leaves far more latents dead. ``--modes fast`` skips the slow plain path.
"""
from __future__ import annotations

import argparse
import time

import torch

from sae_core.sae import SAEConfig, create_sae, kernels
from sae_core.training.step import aux_k_loss

SIZES = {"small": dict(d_in=128, d_sae=2048), "large": dict(d_in=512, d_sae=16384)}
ARCHS = {"topk": dict(arch="topk"), "batchtopk": dict(arch="batchtopk"),
         "sampled-l2": dict(arch="sampled", l=4.0, scoring="l2"),
         "sampled-entropy": dict(arch="sampled", l=4.0, scoring="entropy")}
STEPS = {"small": 5, "large": 2}   # timed steps per round


def _step(sae, opt, x_ND, dead_S, pre_buf):
    out = sae(x_ND, pre_buf)  # the trainer's reused pre-activation buffer
    mse = (out.x_hat - x_ND).pow(2).sum(-1).mean()
    loss = mse + aux_k_loss(sae, x_ND, out, dead_S) / 32
    opt.zero_grad(set_to_none=True)
    loss.backward()
    sae.remove_parallel_grads()
    opt.step()
    sae.normalize_decoder()
    out.fired()
    return loss.item(), out.l0()


def time_config(size, arch, mode, batch, steps, dead_fraction) -> float:
    """Seconds per step (mean over ``steps`` after one warm-up step)."""
    kernels.set_kernels(mode)
    torch.manual_seed(0)
    cfg = SAEConfig(k=32, **SIZES[size], **ARCHS[arch])
    sae = create_sae(cfg).train()
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    x_ND = torch.randn(batch, cfg.d_in)
    dead_S = torch.rand(cfg.d_sae, generator=torch.Generator().manual_seed(1)) < dead_fraction
    pre_buf = torch.empty(batch, cfg.d_sae)
    _step(sae, opt, x_ND, dead_S, pre_buf)  # warm-up: allocator, Adam state
    t0 = time.perf_counter()
    for _ in range(steps):
        _step(sae, opt, x_ND, dead_S, pre_buf)
    return (time.perf_counter() - t0) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--sizes", default="small,large")
    ap.add_argument("--dead", type=float, default=0.0, help="fraction of latents marked dead (AuxK)")
    ap.add_argument("--modes", default="plain,fast")
    ap.add_argument("--archs", default=",".join(ARCHS), help="sampled archs use l=4")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    modes = args.modes.split(",")
    archs = list(dict.fromkeys(["batchtopk"] + args.archs.split(",")))  # the reference always runs
    if "fast" not in modes:
        modes.append("fast")
    best: dict[tuple, float] = {}
    for _ in range(args.rounds):
        for size in args.sizes.split(","):
            for arch in archs:
                for mode in modes:
                    key = (size, arch, mode)
                    s = time_config(size, arch, mode, args.batch, STEPS[size], args.dead)
                    best[key] = min(best.get(key, float("inf")), s)
    print(f"threads={args.threads} batch={args.batch} k=32 l=4 dead={args.dead} "
          f"rounds={args.rounds} (best round)")
    print(f"{'size':6} {'arch':16} {'plain tok/s':>12} {'fast tok/s':>12} {'speedup':>8} "
          f"{'step / batchtopk step':>22}")
    for size in args.sizes.split(","):
        for arch in archs:
            f = best[(size, arch, "fast")]
            p = best.get((size, arch, "plain"))
            rel = f / best[(size, "batchtopk", "fast")]
            plain = f"{args.batch / p:12.0f}" if p else f"{'-':>12}"
            speedup = f"{p / f:7.2f}x" if p else f"{'-':>8}"
            print(f"{size:6} {arch:16} {plain} {args.batch / f:12.0f} {speedup} {rel:21.2f}x")


if __name__ == "__main__":
    main()
