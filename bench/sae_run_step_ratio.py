"""Step time of whole training runs, Sampled-SAE against our BatchTopK, taking turns in one process
(issue #3: "Sampled-SAE costs at most 15% more time per step than our BatchTopK").

``sae_step_speed.py`` times steps on random data with the same dead latents for every
architecture. In a real run they differ: the Sampled-SAE's pool leaves most latents dead by
design (~92% at l=4, against ~35% for BatchTopK), so AuxK has more to read. This script runs the
real ``train_sae`` for each configuration on the benchmark's activation file (the files of
``sae_throughput.py``: real zoo:tiny-a activations at the small size, synthetic planted data at
the large one), all in one process, taking turns every ``--turn-steps`` steps: each trainer runs
in a thread whose batch source waits for its turn and whose ``on_step`` hands the turn on, so
exactly one trainer computes at a time and a burst of load from elsewhere hits neighbouring
steps of every configuration alike. Turns of a few steps rather than one: a trainer's first step
after another's runs on caches the other has filled (its 32 MB pre-activation buffer alone fills
L3 at the small size); turns of one step made every step ~30% slower than alone (BatchTopK
102-111 ms with ``--turn-steps 1`` against 80 ms with ``--configs batchtopk``). A step's time runs from its batch being handed out to its ``on_step``;
steps 1-``--skip`` (init, warm-up) and the last turn-steps + 1 (the first trainer to finish
calibrates while the others still step) are left out.

    .venv/bin/python bench/sae_run_step_ratio.py [--size small|large] [--steps 400] [--skip 30]
        [--turn-steps 5] [--configs batchtopk,sampled:l2,sampled:entropy] [--l 4] [--threads 2]

Prints, per configuration, the mean and median step time over the kept steps, the median of the
per-step ratio to BatchTopK's step at the same index, the dead fraction at the end and the
held-out FVU; writes ``bench/results/sae_run_step_ratio.json``. Each run draws from its own
generator (``step.TrainingRun``), so the turn pattern does not change what a trainer computes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import sae_throughput  # noqa: E402  (the benchmark's data files and sizes)
from sae_core.training import loop as training  # noqa: E402
from sae_core.sae.config import SAEConfig  # noqa: E402

RESULTS = BENCH / "results" / "sae_run_step_ratio.json"


class Turns:
    """Round-robin baton between trainer threads; finished trainers leave the ring."""

    def __init__(self, names: list[str]):
        self.ring, self.i = list(names), 0
        self.cv = threading.Condition()

    def wait(self, name: str) -> None:
        with self.cv:
            self.cv.wait_for(lambda: name not in self.ring or self.ring[self.i] == name)

    def pass_on(self, name: str, finished: bool) -> None:
        with self.cv:
            if name in self.ring:
                at = self.ring.index(name)
                if finished:
                    self.ring.pop(at)
                    self.i = at % len(self.ring) if self.ring else 0
                else:
                    self.i = (at + 1) % len(self.ring)
            self.cv.notify_all()


def _config(spec: str, size_cfg: dict, l: float) -> SAEConfig:
    arch, _, scoring = spec.partition(":")
    extra = dict(l=l, scoring=scoring) if arch == "sampled" else {}
    return SAEConfig(arch=arch, d_in=size_cfg["d_in"], d_sae=size_cfg["d_sae"], k=size_cfg["k"], **extra)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="small", choices=sorted(sae_throughput.SIZES))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--skip", type=int, default=30, help="first steps left out (init, warm-up)")
    p.add_argument("--configs", default="batchtopk,sampled:l2,sampled:entropy")
    p.add_argument("--turn-steps", type=int, default=5, help="steps a trainer runs per turn")
    p.add_argument("--l", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    size_cfg = sae_throughput.SIZES[args.size]
    B = size_cfg["batch"]
    path, meta = sae_throughput.ensure_data(args.size, size_cfg, args.steps + 1)
    data = torch.from_numpy(np.load(path))
    train, held_out = data[:-sae_throughput.EVAL_ROWS], data[-sae_throughput.EVAL_ROWS:]
    n_batches = train.shape[0] // B
    specs = list(dict.fromkeys(["batchtopk"] + args.configs.split(",")))
    lr = 2e-4 / (size_cfg["d_sae"] / 2**14) ** 0.5
    tcfg = training.TrainerConfig(total_tokens=args.steps * B, batch_size=B, lr=lr, warmup_steps=0,
                                  decay_fraction=0.0, device="cpu")
    turns = Turns(specs)
    times: dict[str, list[float]] = {s: [] for s in specs}
    logs: dict[str, list] = {s: [] for s in specs}
    results: dict[str, object] = {}

    def run(spec: str) -> None:
        started = [0.0]

        def source(seed: int):
            for i in range(n_batches):
                turns.wait(spec)
                started[0] = time.perf_counter()
                yield train[i * B:(i + 1) * B]

        def on_step(entry, total):
            times[spec].append(time.perf_counter() - started[0])
            logs[spec].append(entry)
            if entry.step % args.turn_steps == 0 or entry.step == total:
                turns.pass_on(spec, finished=entry.step == total)

        try:
            results[spec] = training.train_sae(source, _config(spec, size_cfg, args.l), tcfg,
                                               on_step=on_step).sae
        except BaseException as e:  # noqa: BLE001 - reported below, the ring must not hang
            results[spec] = e
            turns.pass_on(spec, finished=True)

    threads = [threading.Thread(target=run, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    last = args.steps - args.turn_steps - 1  # the last turn overlaps the first finisher's calibration
    keep = slice(args.skip, last)
    ref = times["batchtopk"][keep]
    rows = []
    print(f"{args.size}: d_in {size_cfg['d_in']}, d_sae {size_cfg['d_sae']}, k {size_cfg['k']}, "
          f"batch {B}, l {args.l}, {args.steps} steps in turns of {args.turn_steps}, steps {args.skip + 1}-"
          f"{last} kept, {args.threads} threads")
    print(f"{'config':18} {'mean ms':>8} {'median ms':>9} {'step/BTK':>8} {'dead':>5} {'FVU':>7}")
    for spec in specs:
        if isinstance(results[spec], BaseException):
            print(f"{spec:18} ERROR {results[spec]!r}")
            continue
        sae = results[spec]
        with torch.no_grad():
            x_hat = torch.cat([sae(held_out[i:i + B]).x_hat for i in range(0, held_out.shape[0], B)])
        fvu = ((held_out - x_hat).pow(2).sum() / (held_out - held_out.mean(0)).pow(2).sum()).item()
        mine = times[spec][keep]
        ratio = statistics.median(a / b for a, b in zip(mine, ref))
        row = dict(config=spec, mean_ms=1e3 * statistics.fmean(mine), median_ms=1e3 * statistics.median(mine),
                   median_step_ratio_vs_batchtopk=ratio, dead_fraction_end=logs[spec][-1].aux_dead_fraction,
                   fvu=fvu)
        rows.append(row)
        print(f"{spec:18} {row['mean_ms']:8.1f} {row['median_ms']:9.1f} {ratio:8.2f} "
              f"{row['dead_fraction_end']:5.2f} {fvu:7.4f}")
    out = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    out[args.size] = dict(args=vars(args), data=meta, rows=rows,
                          finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
