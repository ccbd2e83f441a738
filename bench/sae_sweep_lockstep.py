"""An l-sweep's training time: its SAEs one after another (``train_sae`` each) against all of them
in lockstep on one stream of batches (``train_many``, what ``sae-core sweep`` does), with the
activations in memory and streamed from an on-disk store (``sae_core.training.data``).

Lockstep reads (and shuffles) each batch once for the whole sweep instead of once per SAE; every
SAE's step then runs right after another SAE's step, on caches that step filled. Both orders
train the same SAEs bit for bit on the same data source (checked here: each SAE owns its RNG;
the in-memory and streamed sources shuffle differently). Modes take turns, round
after round, so drift of this machine's speed hits them alike.

    .venv/bin/python bench/sae_sweep_lockstep.py [--size demo|small] [--steps 100] [--rounds 2]
        [--modes memory:sequential,memory:lockstep,stream:sequential,stream:lockstep]

Sizes: ``demo`` is the demo's sweep (d_sae 512, K 16, batch 1024; l in 1,2,4,8,16 for both
scoring rules, BatchTopK and TopK: 12 SAEs); ``small`` the same 12 SAEs at the throughput
benchmark's small size (d_sae 2048, K 32, batch 4096). Data: the small benchmark file of
``sae_throughput.py`` (real zoo:tiny-a activations, d_in 128). Prints each mode's wall time per
round and SAE-steps per second; writes ``bench/results/sae_sweep_lockstep.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import sae_throughput  # noqa: E402  (the benchmark's data files)
from sae_core.activations import import_activation_file  # noqa: E402
from sae_core.sae.config import SAEConfig  # noqa: E402
from sae_core.training.data import MemorySplit, StreamSplit  # noqa: E402
from sae_core.training.loop import TrainerConfig, train_many, train_sae  # noqa: E402

RESULTS = BENCH / "results" / "sae_sweep_lockstep.json"
SIZES = {"demo": dict(d_sae=512, k=16, batch=1024), "small": dict(d_sae=2048, k=32, batch=4096)}


def _configs(d_in: int, d_sae: int, k: int) -> list[SAEConfig]:
    cfgs = [SAEConfig(arch="sampled", d_in=d_in, d_sae=d_sae, k=k, l=l, scoring=s)
            for s in ("l2", "entropy") for l in (1.0, 2.0, 4.0, 8.0, 16.0)]
    return cfgs + [SAEConfig(arch=a, d_in=d_in, d_sae=d_sae, k=k) for a in ("batchtopk", "topk")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="demo", choices=sorted(SIZES))
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--modes", default="memory:sequential,memory:lockstep,stream:sequential,stream:lockstep")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    size = SIZES[args.size]
    small = sae_throughput.SIZES["small"]
    path, _ = sae_throughput.ensure_data("small", small, args.steps + 1)
    tmp = Path(tempfile.mkdtemp(prefix="sweep-lockstep-"))
    store = import_activation_file(path, tmp / "store")
    splits = {"memory": MemorySplit.from_store(store), "stream": StreamSplit.from_store(store)}
    cfgs = _configs(store.d, size["d_sae"], size["k"])
    B = size["batch"]
    tcfg = TrainerConfig(total_tokens=args.steps * B, batch_size=B, seed=0, device="cpu")
    print(f"{args.size}: {len(cfgs)} SAEs, d_in {store.d}, d_sae {size['d_sae']}, K {size['k']}, batch {B}, "
          f"{args.steps} steps each; store {store.n_tokens} rows in {len(store.shard_rows)} shards, "
          f"{splits['memory'].train_ND.shape[0] // B} batches an epoch", flush=True)

    times: dict[str, list[float]] = {m: [] for m in args.modes.split(",")}
    finals: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for mode in times:
            where, how = mode.split(":")
            source = splits[where].batches(B)
            t0 = time.perf_counter()
            if how == "lockstep":
                results = train_many(source, cfgs, tcfg)
            else:
                results = [train_sae(source, cfg, tcfg) for cfg in cfgs]
            times[mode].append(time.perf_counter() - t0)
            finals[mode] = [res.sae.state_dict() for res in results]
            print(f"  round {r + 1} {mode:20s} {times[mode][-1]:7.1f} s", flush=True)

    same, first = {}, {}  # per data source: did every order train the weights of its first one?
    for mode, f in finals.items():
        where = mode.split(":")[0]
        ref = first.setdefault(where, f)
        same[where] = same.get(where, True) and all(torch.equal(a[k], b[k]) for a, b in zip(ref, f) for k in a)
    rows = []
    for mode, ts in times.items():
        best = min(ts)
        rows.append({"mode": mode, "seconds": ts, "best_s": best,
                     "sae_steps_per_s": len(cfgs) * args.steps / best})
        print(f"{mode:20s} best {best:7.1f} s  {len(cfgs) * args.steps / best:7.1f} SAE-steps/s  "
              f"(rounds: {', '.join(f'{t:.1f}' for t in ts)})")
    print("sequential and lockstep trained the same weights: "
          + ", ".join(f"{where} {ok}" for where, ok in same.items()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"size": args.size, "steps": args.steps, "n_saes": len(cfgs),
                                   "same_weights": same, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
