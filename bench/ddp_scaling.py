"""Data-parallel scaling on the CPU: one process against 2 gloo ranks (``torchrun``), same SAE.

A compute-bound size (default d_in 512, d_sae 16384, k 32, global batch 4096: the encoder matmul
dominates a step) on synthetic activations (``sae_throughput._synthetic``) in a store of 8
shards. Each configuration trains the same BatchTopK SAE for the same global batches' worth of
steps; the steps after the warm-up are timed from the trainer's ``on_step`` (rank 0's clock), so
start-up, data import and evaluation are left out:

- ``1 process x T threads`` (T = 1 and 2): the ordinary single-process trainer;
- ``torchrun 2 ranks x 1 thread``: ``distributed`` data parallelism, each rank half of every batch.

On this 2-core machine the 2-rank run cannot beat one process using both cores (the same cores,
plus the collectives); the numbers say what the collectives cost. On a multi-core or multi-GPU
machine the same command shows the scaling.

    .venv/bin/python bench/ddp_scaling.py [--d-in 512] [--d-sae 16384] [--steps 12] [--warmup 2] \
        [--ranks 2] [--device cpu]

Prints a table and writes ``bench/results/ddp_scaling.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
RESULTS = REPO / "bench" / "results" / "ddp_scaling.json"


def worker(args) -> None:
    """One training run (one rank under torchrun); rank 0 writes its timings to ``args.out``."""
    import torch

    from sae_core.activations import ActivationStore
    from sae_core import distributed
    from sae_core.sae.config import SAEConfig
    from sae_core.training.data import StreamSplit, shard_batches
    from sae_core.training.loop import TrainerConfig, train_sae

    torch.set_num_threads(args.threads)
    dp = distributed.init_from_env(args.device)
    store = ActivationStore.open(args.store)
    n_train = StreamSplit.from_store(store).n_train
    rank, world = (dp.rank, dp.world) if dp else (0, 1)
    cfg = SAEConfig(arch="batchtopk", d_in=store.d, d_sae=args.d_sae, k=args.k)
    steps = args.warmup + args.steps
    tcfg = TrainerConfig(total_tokens=steps * args.batch, batch_size=args.batch, warmup_steps=0, decay_fraction=0,
                         device=args.device)
    stamps: list[float] = []

    def on_step(entry, total):
        stamps.append(time.perf_counter())
    result = train_sae(shard_batches(store, n_train, args.batch, rank, world), cfg, tcfg, on_step=on_step, dp=dp)
    if rank == 0:
        timed = [b - a for a, b in zip(stamps[args.warmup - 1:], stamps[args.warmup:])]
        timed.sort()
        median = timed[len(timed) // 2]
        Path(args.out).write_text(json.dumps({
            "ranks": world, "threads_per_rank": args.threads, "timed_steps": len(timed),
            "median_step_s": median, "tokens_per_s": args.batch / median,
            "final_sq_err": result.history[-1].sq_err}))
    distributed.shutdown()


def _store(tmp: Path, args) -> Path:
    import numpy as np

    from sae_core.activations import import_activation_file
    from sae_throughput import _synthetic

    rows = (args.warmup + args.steps + 16) * args.batch + 16384
    arr, _ = _synthetic(rows, args.d_in)
    np.save(tmp / "acts.npy", arr)
    import_activation_file(tmp / "acts.npy", tmp / "store", shard_tokens=-(-rows // 8))
    return tmp / "store"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-in", type=int, default=512)
    p.add_argument("--d-sae", type=int, default=16384)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    common = ["--d-sae", str(args.d_sae), "--k", str(args.k), "--batch", str(args.batch), "--steps", str(args.steps),
              "--warmup", str(args.warmup), "--device", args.device]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ddp-bench-") as d:
        tmp = Path(d)
        store = _store(tmp, args)
        plans = [("1 process x 2 threads", [], 2), ("1 process x 1 thread", [], 1),
                 (f"torchrun {args.ranks} ranks x 1 thread",
                  ["-m", "torch.distributed.run", "--nproc-per-node", str(args.ranks)], 1)]
        for label, launcher, threads in plans:
            out = tmp / "out.json"
            out.unlink(missing_ok=True)
            cmd = [sys.executable, *launcher, str(Path(__file__).resolve()), "--worker", "--store", str(store),
                   "--out", str(out), "--threads", str(threads), *common]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
            print(f"[run] {label} ...", flush=True)
            load = os.getloadavg()[0]
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
            if r.returncode != 0 or not out.exists():
                rows.append({"run": label, "error": (r.stderr.strip().splitlines() or ["?"])[-1][:300]})
                continue
            rows.append({"run": label, "loadavg_1m_before": load, **json.loads(out.read_text())})
    base = next((r for r in rows if r["run"] == "1 process x 2 threads" and "error" not in r), None)
    print(f"\nd_in {args.d_in}, d_sae {args.d_sae}, k {args.k}, global batch {args.batch}, {args.steps} timed steps, "
          f"device {args.device}, {os.cpu_count()} cores")
    print(f"{'run':<30} {'tok/s':>9} {'step s':>7} {'x 1 proc':>8} {'sq_err':>8} {'load1m':>6}")
    for r in rows:
        if "error" in r:
            print(f"{r['run']:<30} ERROR: {r['error']}")
            continue
        r["x_vs_one_process"] = r["tokens_per_s"] / base["tokens_per_s"] if base else None
        print(f"{r['run']:<30} {r['tokens_per_s']:>9.0f} {r['median_step_s']:>7.3f} "
              f"{r['x_vs_one_process'] or float('nan'):>8.2f} {r['final_sq_err']:>8.3f} {r['loadavg_1m_before']:>6.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "settings": vars(args), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                   "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}},
                                  indent=1) + "\n")
    print(f"\nwrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
