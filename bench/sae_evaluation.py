"""Downstream evaluation of a demo-sized sweep (issue #30): seconds per SAE for sparse probing,
absorption and the activation lottery, at the default settings (``EvaluationConfig()``), and the
model's side (labelled text through the model), paid once per (model, hook).

Target: probing and absorption under 30 s per demo-sized SAE (d_in 128, d_sae 512) on this 2-core
CPU. Reads a workspace holding a sweep (the full demo: ``sae-core demo``); prints one table and
each SAE's numbers, writes ``bench/results/sae_evaluation.json``. Nothing is stored in the workspace.

    .venv/bin/python bench/sae_evaluation.py --workspace DIR [--sweep NAME]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sae_core.evaluation import job  # noqa: E402
from sae_core.evaluation.config import EvaluationConfig  # noqa: E402
from sae_core.io import read_json  # noqa: E402
from sae_core.models.loading import load_model  # noqa: E402
from sae_core.sae.io import load_sae  # noqa: E402
from sae_core.workspace import Workspace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--sweep", default=None, help="a sweep's name (default: the newest)")
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    sweep = ws.get("sweep", args.sweep) if args.sweep else ws.list("sweep")[0]
    rows = read_json(sweep.path / "table.json")
    arts = [ws.get("sae", r["sae"]) for r in rows]
    model = load_model(arts[0].model)
    cfg = EvaluationConfig()
    side = job.ModelSide(model, cfg)
    t0 = time.perf_counter()
    side.probing(arts[0].hook)
    t_probe_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    side.absorption(arts[0].hook)
    t_abs_data = time.perf_counter() - t0
    out = []
    for row, art in zip(rows, arts):
        sae = load_sae(art.path)
        times, summary = {}, {}
        for metric in cfg.metrics:
            t0 = time.perf_counter()
            result = job.compute_metric(metric, sae, art, ws, side)
            times[metric] = time.perf_counter() - t0
            summary.update(job.SUMMARIES[metric](result))
        out.append({"arch": row["arch"], "l": row.get("l"), "scoring": row.get("scoring"), "d_sae": sae.cfg.d_sae,
                    "seconds": times, **summary})
    print(f"model side (once per model and hook): probing {t_probe_data:.1f} s, absorption {t_abs_data:.1f} s")
    print(f"{'SAE':24s} {'probing s':>9s} {'absorb s':>9s} {'lottery s':>9s} {'probe k=1':>9s} {'probe k=5':>9s} "
          f"{'absorption':>10s} {'top 1% share':>12s}")
    for r in out:
        name = r["arch"] + (f" l={r['l']:g} {r['scoring']}" if r["arch"] == "sampled" else "")
        s = r["seconds"]
        print(f"{name:24s} {s['probing']:9.2f} {s['absorption']:9.2f} {s['lottery']:9.2f} "
              f"{r['probe_sae_top_1']:9.3f} {r['probe_sae_top_5']:9.3f} {r['absorption_rate']:10.3f} "
              f"{r['lottery_top_share']:12.3f}")
    worst = max(r["seconds"]["probing"] + r["seconds"]["absorption"] for r in out)
    print(f"slowest SAE, probing + absorption: {worst:.2f} s (target < 30 s)")
    path = REPO / "bench" / "results" / "sae_evaluation.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"model_side_s": {"probing": t_probe_data, "absorption": t_abs_data},
                                "saes": out}, indent=1, allow_nan=False))


if __name__ == "__main__":
    main()
