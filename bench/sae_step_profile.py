"""Where one training step's time goes at full width (issue #30): torch's profiler over three steps
of our trainer at d_in 768, d_sae 24,576, k 32, batch 4,096, on ``sae_throughput.py``'s activation
file (random:pythia-160m layer 6, pre-scaled as there), one table of operators by self time.

Run ``bench/sae_throughput.py --sizes full`` once first (it writes the file). The profiler adds
some overhead of its own: compare parts within one table, and take speeds from sae_throughput.py.

    .venv/bin/python bench/sae_step_profile.py [--arch batchtopk|topk|sampled] [--rows 30] [--shapes]
        [--dead-tokens N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sae_core.sae.config import SAEConfig  # noqa: E402
from sae_core.training import loop as training  # noqa: E402

DATA = REPO / "bench" / "results" / "data" / "full_d768.npy"
SCALE = 0.9222  # sae_throughput.py's pre-scaling of this file (E||x|| = sqrt(d_in))
D_IN, D_SAE, K, BATCH, STEPS = 768, 24576, 32, 4096, 6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="batchtopk", choices=["batchtopk", "topk", "sampled"])
    ap.add_argument("--rows", type=int, default=30)
    ap.add_argument("--shapes", action="store_true", help="group operators by input shape")
    ap.add_argument("--dead-tokens", type=int, default=None,
                    help="AuxK's dead window (default: the trainer's, one batch in this short run, so AuxK "
                    "runs from the second step; 1000000 as sae_throughput.py's default: no AuxK)")
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} is missing: run bench/sae_throughput.py --sizes full first")
    data = torch.from_numpy(np.load(DATA, mmap_mode="r")[:BATCH * STEPS].copy()) * SCALE
    cfg = SAEConfig(arch=args.arch, d_in=D_IN, d_sae=D_SAE, k=K, l=4.0)
    tcfg = training.TrainerConfig(total_tokens=STEPS * BATCH, batch_size=BATCH, warmup_steps=0,
                                  decay_fraction=0.0, seed=0, dead_tokens=args.dead_tokens)
    prof = profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes)
    stamps: list[float] = []

    def on_step(entry, total):  # profile steps 3-5: after the first step's allocations and AuxK's start
        stamps.append(time.perf_counter())
        if len(stamps) == 2:
            prof.start()
        if len(stamps) == 5:
            prof.stop()

    training.train_sae(lambda seed: iter(data.split(BATCH)), cfg, tcfg, on_step=on_step)
    print(f"{args.arch}: step seconds {[round(b - a, 3) for a, b in zip(stamps, stamps[1:])]}")
    print(prof.key_averages(group_by_input_shape=args.shapes).table(sort_by="self_cpu_time_total",
                                                                      row_limit=args.rows))


if __name__ == "__main__":
    main()
