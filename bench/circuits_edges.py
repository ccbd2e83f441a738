"""Attribution patching against exact path patching over every edge of zoo B (issue #14 target:
EAP >= 20x faster than patching each edge exactly), side by side in one run.

For each task: the EdgeScorer's shared setup (sender outputs on the clean and corrupted prompts)
once, then EAP (2 forward + 1 backward pass per batch), EAP-IG, and exact path patching of every
edge (one forward pass each), all on the same prompts; Spearman rho of EAP and EAP-IG against the
exact scores over all edges and over the exact top 50, and of their node scores against exact
single-component patching (mean ablation). Writes ``bench/results/circuits_edges.json``.

    .venv/bin/python bench/circuits_edges.py [--model zoo:tiny-b] [--tasks digits] [--prompts 64]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy.stats import spearmanr  # noqa: E402

from sae_core.circuits.edges import EdgeScorer  # noqa: E402
from sae_core.circuits.tasks import TaskConfig, make_task  # noqa: E402
from sae_core.models.loading import load_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _rho(a: dict, b: dict, names: list[str]) -> float:
    return float(spearmanr([a[n] for n in names], [b[n] for n in names])[0])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="zoo:tiny-b")
    p.add_argument("--tasks", default="digits")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--ig-steps", type=int, default=5)
    args = p.parse_args()
    model = load_model(args.model)
    rows = []
    for task_name in args.tasks.split(","):
        task = make_task(model, TaskConfig(task=task_name, n_prompts=args.prompts))
        scorer = EdgeScorer(model, task)
        t = time.perf_counter()
        eap = scorer.attribute()
        t_eap = time.perf_counter() - t
        t = time.perf_counter()
        ig = scorer.attribute(ig_steps=args.ig_steps)
        t_ig = time.perf_counter() - t
        t = time.perf_counter()
        exact = scorer.patch_edges()
        t_exact = time.perf_counter() - t
        nodes = scorer.patch_nodes()  # exact single-component patching, against EAP's node scores
        comps = list(nodes)
        names = list(exact.scores)
        top = sorted(names, key=lambda n: -abs(exact.scores[n]))[:50]
        rows.append({"task": task_name, "prompts": len(task), "edges": len(names), "eap_s": t_eap, "eap_ig_s": t_ig,
                     "exact_s": t_exact, "speedup": t_exact / t_eap, "speedup_ig": t_exact / t_ig,
                     "rho_eap_all": _rho(eap.scores, exact.scores, names), "rho_ig_all": _rho(ig.scores, exact.scores, names),
                     "rho_eap_top50": _rho(eap.scores, exact.scores, top), "rho_ig_top50": _rho(ig.scores, exact.scores, top),
                     "rho_eap_nodes": _rho(eap.node_scores, nodes, comps), "rho_ig_nodes": _rho(ig.node_scores, nodes, comps)})
    print(f"{args.model}: every edge, EAP vs EAP-IG ({args.ig_steps} steps) vs exact path patching "
          f"(load {os.getloadavg()[0]:.2f})")
    print(f"{'task':14}{'prompts':>8}{'edges':>7}{'EAP s':>8}{'IG s':>7}{'exact s':>9}{'speedup':>9}{'IG x':>7}"
          f"{'rho EAP':>9}{'rho IG':>8}{'top50 EAP':>11}{'top50 IG':>10}{'nodes EAP':>11}{'nodes IG':>10}")
    for r in rows:
        print(f"{r['task']:14}{r['prompts']:>8}{r['edges']:>7}{r['eap_s']:>8.2f}{r['eap_ig_s']:>7.2f}{r['exact_s']:>9.1f}"
              f"{r['speedup']:>8.0f}x{r['speedup_ig']:>6.0f}x{r['rho_eap_all']:>9.3f}{r['rho_ig_all']:>8.3f}"
              f"{r['rho_eap_top50']:>11.3f}{r['rho_ig_top50']:>10.3f}{r['rho_eap_nodes']:>11.3f}{r['rho_ig_nodes']:>10.3f}")
    res = REPO / "bench" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "circuits_edges.json").write_text(json.dumps({"model": args.model, "load": os.getloadavg()[0],
                                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
