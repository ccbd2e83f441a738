"""Shared by the runner scripts in this folder; imports only numpy and torch (every venv has both).

A runner is started as ``PYTHON bench/peers/run_X.py --data FILE --d-sae S --k K --batch B
--lr LR --warmup W --steps N [--max-seconds T] [...]`` and prints one JSON line on stdout, prefixed
with ``RESULT `` so that library chatter on stdout cannot be mistaken for it.

Data: ``FILE`` is a float32 ``.npy`` ``[n_rows, d_in]`` whose last ``--eval-rows`` rows are held
out. Training batch ``i`` is rows ``[i*B, (i+1)*B)`` of the training part (wrapping around), the
same for every trainer.

Timing: ``W`` warm-up steps (allocator, kernel selection, lazy init) are run and not timed, then
``N`` steps are timed one by one with ``time.perf_counter`` (forward, loss, backward, optimizer
step and whatever the trainer does per step); tok/s is reported from the median and the mean. ``--max-seconds`` stops the timed loop
early once exceeded (at least 2 timed steps); ``steps`` in the output is what was timed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch


def parse_args(extra=None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--d-sae", type=int, required=True)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--max-seconds", type=float, default=40.0)
    p.add_argument("--eval-rows", type=int, default=16384)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda: the data, the SAE and its steps live there")
    if extra:
        extra(p)
    return p.parse_args()


def rss_mb() -> float:
    """Peak resident set size of this process so far, MiB.

    ``VmHWM`` from ``/proc/self/status``: the high-water mark of this process image. Linux keeps
    ``getrusage().ru_maxrss`` across ``fork`` + ``execve``, so a runner started by a parent that
    once held a large RSS (e.g. after harvesting) would report the parent's peak; ``ru_maxrss`` is
    the fallback off Linux.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def setup(args) -> tuple[torch.Tensor, torch.Tensor]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    arr = np.load(args.data)  # fully in memory: the same cost for every trainer
    if arr.dtype != np.float32 or arr.ndim != 2:
        raise SystemExit(f"{args.data}: expected a 2-D float32 array, got {arr.dtype} {arr.shape}")
    data = torch.from_numpy(arr).to(args.device)  # on a GPU the whole file sits in its memory
    train, held_out = data[:-args.eval_rows], data[-args.eval_rows:]
    if train.shape[0] < args.batch:
        raise SystemExit(f"{args.data}: {train.shape[0]} training rows, fewer than one batch")
    return train, held_out


def batch_at(train: torch.Tensor, i: int, batch: int) -> torch.Tensor:
    n_batches = train.shape[0] // batch
    s = (i % n_batches) * batch
    return train[s:s + batch]


def timed_loop(step_fn, train, args) -> list[float]:
    """Run ``args.warmup`` untimed then up to ``args.steps`` timed calls of ``step_fn(x)``;
    returns the timed steps' durations in seconds."""
    sync = torch.cuda.synchronize if train.is_cuda else (lambda: None)  # time the GPU's work, not the launch
    for i in range(args.warmup):
        step_fn(batch_at(train, i, args.batch))
    sync()
    t0 = time.perf_counter()
    durations = []
    for j in range(args.steps):
        t = time.perf_counter()
        step_fn(batch_at(train, args.warmup + j, args.batch))
        sync()
        durations.append(time.perf_counter() - t)
        if len(durations) >= 2 and time.perf_counter() - t0 > args.max_seconds:
            break
    return durations


@torch.no_grad()
def fvu_l0(recon_fn, held_out: torch.Tensor, batch: int) -> tuple[float, float]:
    """FVU = sum||x - x_hat||^2 / sum||x - mean(x)||^2 (mean per dimension over the held-out rows)
    and L0 = mean number of non-zero codes per token. ``recon_fn(x) -> (x_hat, z)``."""
    err = 0.0
    l0 = 0.0
    n = 0
    for s in range(0, held_out.shape[0], batch):
        x = held_out[s:s + batch]
        x_hat, z = recon_fn(x)
        err += (x_hat.float() - x).pow(2).sum().item()
        l0 += (z != 0).sum().item()
        n += x.shape[0]
    total = (held_out - held_out.mean(0)).pow(2).sum().item()
    return err / total, l0 / n


def emit(args, durations: list[float], fvu: float, l0: float, rss_base: float, **extra) -> None:
    """Print the result line. ``tokens_per_s`` uses the median step time (robust to other
    processes on a shared machine); ``tokens_per_s_mean`` uses total tokens / total seconds."""
    steps, seconds = len(durations), sum(durations)
    median = float(np.median(durations))
    out = {"tokens_per_s": args.batch / median, "tokens_per_s_mean": steps * args.batch / seconds,
           "fvu": fvu, "l0": l0, "peak_rss_mb": rss_mb(), "rss_after_load_mb": rss_base,
           "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "steps": steps, "seconds": seconds, "step_seconds_median": median,
           "step_seconds_min": min(durations), "step_seconds_max": max(durations), "threads": torch.get_num_threads(), "torch": torch.__version__,
           "python": sys.version.split()[0], "pid": os.getpid(), **extra}
    print("RESULT " + json.dumps(out), flush=True)
