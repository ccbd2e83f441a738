"""Times of the training-step parts that issue #3's Sampled-SAE work changed, in isolation, on
random data, best of ``--reps`` runs (the figures the docstrings of ``kernels.py``,
``sampled.py`` and ``topk.py`` cite):

- the encoder matmul ``addmm`` into a fresh output against a reused one (``pre_buf``);
- TopK's selection: top-k of relu(pre) (the old rule) against top-k of pre itself;
- AuxK's per-row top-k among "dead" columns (``masked_topk_row_indices``): the plain gather +
  top-k against block-max pruning, at several dead fractions, on 1024 of 4096 rows (row gather
  included, as in ``aux_decode``), and which one ``_block_width`` picks;
- the Sampled-SAE's latent scores (L2, entropy) over a [4096, d_sae] batch;
- ``log`` against ``log2`` per value, and ``log2`` of exact zeros (why the entropy clamps to tiny).

    .venv/bin/python bench/sae_kernel_parts.py [--sizes small,large] [--reps 9] [--threads 2]

small = d_in 128, d_sae 2048, k_aux 64; large = d_in 512, d_sae 16384, k_aux 256 (k_aux = d_in/2).
"""
from __future__ import annotations

import argparse
import time

import torch

from sae_core.sae import kernels
from sae_core.sae.sampled import latent_scores

SIZES = {"small": (128, 2048), "large": (512, 16384)}
BATCH = 4096


def best_ms(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="small,large")
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    for size in args.sizes.split(","):
        d_in, d_sae = SIZES[size]
        k_aux = d_in // 2
        x = torch.randn(BATCH, d_in, generator=g)
        W = torch.randn(d_in, d_sae, generator=g) / d_in ** 0.5
        b = torch.randn(d_sae, generator=g) * 0.1 - 0.2
        buf = torch.empty(BATCH, d_sae)
        pre = torch.addmm(b, x, W)
        print(f"== {size}: batch {BATCH}, d_in {d_in}, d_sae {d_sae}, {args.threads} threads, "
              f"best of {args.reps} ==")
        fresh = best_ms(lambda: torch.addmm(b, x, W), args.reps)
        reused = best_ms(lambda: torch.addmm(b, x, W, out=buf), args.reps)
        print(f"encoder addmm: fresh output {fresh:.1f} ms, reused buffer {reused:.1f} ms")
        old = best_ms(lambda: kernels.topk_row_indices(torch.relu(pre), 32), args.reps)
        new = best_ms(lambda: kernels.topk_row_indices(pre, 32), args.reps)
        print(f"TopK k=32 selection: top-k of relu(pre) {old:.1f} ms, top-k of pre {new:.1f} ms")
        rows = torch.randperm(BATCH, generator=g)[:BATCH // 4].sort().values
        width = kernels._block_width(d_sae, d_sae, k_aux)  # the width used when blocks are picked
        for dead in (0.2, 0.36, 0.5, 0.7, 0.92):
            dead_S = torch.rand(d_sae, generator=g) < dead
            times = {blk: best_ms(lambda: kernels.masked_topk_row_indices(
                pre.index_select(0, rows), dead_S, k_aux, inplace=True, block=blk), args.reps)
                for blk in (1, width)}
            pick = kernels._block_width(d_sae, int(dead_S.sum()), k_aux)
            print(f"AuxK selection, {dead:.0%} dead, k_aux {k_aux}: plain {times[1]:.1f} ms, "
                  f"blocks of {width} {times[width]:.1f} ms; picked: "
                  f"{'blocks' if pick > 1 else 'plain'}")
        for scoring in ("l2", "entropy"):
            print(f"latent scores ({scoring}): {best_ms(lambda: latent_scores(pre, scoring), args.reps):.1f} ms")
    a = torch.rand(2**22, generator=g) + 1e-3
    out = torch.empty_like(a)
    zeros = torch.zeros_like(a)
    for name, fn, src in (("log", torch.log, a), ("log2", torch.log2, a), ("log2 of exact zeros", torch.log2, zeros)):
        ms = best_ms(lambda: fn(src, out=out), args.reps)
        print(f"{name}: {1e6 * ms / a.numel():.2f} ns per value")


if __name__ == "__main__":
    main()
