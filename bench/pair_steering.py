"""Steering two models through matched pairs against random pairs (issue #32: the effect similarity of
matched pairs reported against the null with a p-value, whatever it is).

On the newest universality result of a workspace (the demo's: zoo:tiny-a against zoo:tiny-b), the
``--pairs`` strongest pairs whose A feature is matched once (many-to-1 matching gives some A features
several partners) and fires on fewer than ``--max-fires`` tokens, each steered at ``--fraction`` x
its typical activation in both models (``universality.pair_steering``), against ``--runs`` random
pairs; then the strongest pair of all, whatever its A feature. Prints a row a pair.

    .venv/bin/python bench/pair_steering.py --workspace DIR [--pairs 8] [--runs 50] [--fraction 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_core.universality.job import Universality  # noqa: E402
from sae_core.universality.pair_steering import steer_result_pair  # noqa: E402
from sae_core.workspace import Workspace  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workspace", type=Path, required=True)
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--fraction", type=float, default=2.0)
    p.add_argument("--max-fires", type=int, default=20_000)
    args = p.parse_args()
    ws = Workspace(args.workspace)
    arts = ws.list("universality")
    if not arts:
        raise SystemExit(f"no universality result in {ws.root}: run `sae-core universality -w {ws.root}` first")
    u = Universality.open(arts[0].path)
    pairs = u.results["pairs"]
    once = Counter(q["a"] for q in pairs)
    by_corr = sorted(range(len(pairs)), key=lambda i: -pairs[i]["corr"])
    chosen = [i for i in by_corr if once[pairs[i]["a"]] == 1 and pairs[i]["fires_a"] < args.max_fires][:args.pairs]
    print(f"{u.config['model_a']} {u.config['hook_a']} vs {u.config['model_b']} {u.config['hook_b']} ({arts[0].name}); "
          f"strength {args.fraction:g}x, {args.runs} random pairs")
    print(f"{'pair':>5} {'A':>5} {'B':>5} {'corr':>6} {'top A':>8} {'similarity':>11} {'null mean':>10} {'p':>6} {'z':>5}  "
          f"raised in A / in B   s")
    for i in chosen + [by_corr[0]]:
        t0 = time.perf_counter()
        e = steer_result_pair(ws, u, i, fraction=args.fraction, runs=args.runs)
        q = pairs[i]
        print(f"{i:>5} {e.a:>5} {e.b:>5} {q['corr']:>6.3f} {q['top_a'][0].strip():>8} {e.similarity:>11.3f} "
              f"{statistics.mean(e.null):>10.3f} {e.p:>6.3f} {e.z:>5.1f}  "
              f"{', '.join(t.strip() for t, _ in e.raised_a[:3])} / {', '.join(t.strip() for t, _ in e.raised_b[:3])}"
              f"   {time.perf_counter() - t0:.1f}")


if __name__ == "__main__":
    main()
