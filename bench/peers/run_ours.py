"""Our trainer: ``sae_core.training.loop.train_sae`` on the benchmark's activation file.

Runs the real training loop (input scaling, geometric-median b_dec init, MSE + AuxK, parallel-grad
removal, Adam, decoder renormalisation, dead counters, per-step log) with a constant learning
rate (no warm-up, no decay) so every trainer sees the same schedule, and AuxK's dead window set
as the sparsify runner's (``--dead-tokens``, 1M by default: our own default, 1/16 of a run, is
one batch in these short runs, so AuxK ran from the second step in ours and never in sparsify). The batch source yields the
same contiguous batches as the peers' runners. Timing comes from ``on_step`` timestamps: step i
lasts from the end of step i-1 to the end of step i, for the steps after the W warm-up steps.

``--max-seconds``: ``on_step`` raises to stop early; the SAE and the input scale are then taken
from the trainer's own ``create_sae``/``estimate_scale`` calls (wrapped, not changed) and finished
as ``train_sae`` would (eval mode, scale folded into the weights).
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import _common  # noqa: E402
from sae_core.training import initialization, step
from sae_core.training import loop as training  # noqa: E402
from sae_core.sae.config import SAEConfig  # noqa: E402


class _Stop(Exception):
    pass


def main() -> None:
    def extra(p):
        p.add_argument("--arch", choices=["batchtopk", "topk", "sampled"], required=True)
        p.add_argument("--l", type=float, default=4.0)
        p.add_argument("--scoring", default="l2")
        p.add_argument("--autocast", default=None, help="bf16: the SAE's matmuls in bfloat16 (TrainerConfig.autocast)")
        p.add_argument("--dead-tokens", type=int, default=1_000_000,
                       help="AuxK's dead window in tokens (TrainerConfig.dead_tokens; the sparsify runner's default)")
    args = _common.parse_args(extra)
    train, held_out = _common.setup(args)
    rss_base = _common.rss_mb()
    d_in = train.shape[1]
    cfg = SAEConfig(arch=args.arch, d_in=d_in, d_sae=args.d_sae, k=args.k, l=args.l,
                    scoring=args.scoring)
    total_steps = args.warmup + args.steps
    tcfg = training.TrainerConfig(total_tokens=total_steps * args.batch, batch_size=args.batch,
                                  lr=args.lr, warmup_steps=0, decay_fraction=0.0, seed=args.seed,
                                  device=args.device, autocast=args.autocast, dead_tokens=args.dead_tokens)
    n_batches = train.shape[0] // args.batch

    def source(seed: int):
        for i in range(n_batches):
            yield _common.batch_at(train, i, args.batch)

    captured: dict = {}
    real_create, real_scale = step.create_sae, training.estimate_scale

    def create(c):
        captured["sae"] = real_create(c)
        return captured["sae"]

    def scale(x):
        captured["scale"] = real_scale(x)
        return captured["scale"]

    step.create_sae, training.estimate_scale = create, scale
    stamps: list[float] = []

    def on_step(entry, total):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()  # the step's GPU work is done: its end, not its launch
        stamps.append(time.perf_counter())
        timed = len(stamps) - args.warmup
        if timed >= 2 and stamps[-1] - stamps[args.warmup - 1 if args.warmup else 0] > args.max_seconds \
                and len(stamps) < total:
            raise _Stop

    t_start = time.perf_counter()
    try:
        sae = training.train_sae(source, cfg, tcfg, on_step=on_step).sae
    except _Stop:
        sae = captured["sae"]
        sae.eval()
        initialization.fold_scale(sae, captured["scale"])
    marks = ([stamps[args.warmup - 1]] if args.warmup else [t_start]) + stamps[args.warmup:]
    durations = [b - a for a, b in zip(marks, marks[1:])]

    def recon(x):
        out = sae(x)
        return out.x_hat, out.z
    fvu, l0 = _common.fvu_l0(recon, held_out, args.batch)
    extra_out = {"trainer": f"ours-{args.arch}", "input_scale": captured.get("scale")}
    try:
        from sae_core.sae.kernels import kernels_mode
        extra_out["kernels"] = kernels_mode()
    except ImportError:  # before the fast kernels existed
        extra_out["kernels"] = "plain (no sae_core.sae.kernels)"
    if hasattr(sae, "encode_batch_rule"):
        with torch.no_grad():
            fvu_b, l0_b = _common.fvu_l0(lambda x: ((z := sae.encode_batch_rule(x)) @ sae.W_dec + sae.b_dec, z),
                                         held_out, args.batch)
        extra_out.update(fvu_train_rule=fvu_b, l0_train_rule=l0_b)
    _common.emit(args, durations, fvu, l0, rss_base, **extra_out)


if __name__ == "__main__":
    main()
