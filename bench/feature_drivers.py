"""What drives a feature, checked against exact mean ablation on the demo SAE's most active features
(issue #32 target: Spearman rho >= 0.8 over the top 20 components).

For each of the ``--features`` most active features (``--by count``: the most often firing; ``max``: the
largest activations) in the index of the SAE the Features page opens (the newest indexed one of
zoo:tiny-a at blocks.1.hook_resid_post), ``circuits.drivers.feature_drivers`` attributes the
feature's activation at the peak of its top ``--contexts`` contexts (each cut at its peak, from the
start of its document, as the Features page does) to every upstream head and MLP, and ablates the top
20 by |attribution| exactly. zoo:tiny-a has 2 layers x 4 heads + 2 MLPs upstream of blocks.1: all
10 are validated, fewer than 20. Prints one row a feature and the median; writes
``bench/results/feature_drivers_{count,max}.json``.

    .venv/bin/python bench/feature_drivers.py --workspace DIR [--features 10] [--contexts 8]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_core.circuits.drivers import feature_drivers  # noqa: E402
from sae_core.features.index import FeatureIndex  # noqa: E402
from sae_core.models.loading import load_model  # noqa: E402
from sae_core.sae.io import load_sae  # noqa: E402
from sae_core.workspace import Workspace  # noqa: E402

MODEL, HOOK = "zoo:tiny-a", "blocks.1.hook_resid_post"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workspace", type=Path, required=True, help="a workspace holding the demo's indexed SAEs")
    p.add_argument("--features", type=int, default=10)
    p.add_argument("--contexts", type=int, default=8)
    p.add_argument("--by", choices=("count", "max"), default="count",
                   help="most active by how often they fire (count) or by their largest activation (max)")
    args = p.parse_args()
    ws = Workspace(args.workspace)
    saes = {a.name: a for a in ws.list("sae") if (a.model, a.hook) == (MODEL, HOOK)}
    indexed = {a.meta.get("sae"): a for a in ws.list("feature_index")}
    name = next((n for n in saes if n in indexed), None)  # the newest indexed one: what the Features page opens
    if name is None:
        raise SystemExit(f"no feature index of a {MODEL} SAE in {ws.root}: run `sae-core demo -w {ws.root}` first")
    art = indexed[name]
    index, sae, model = FeatureIndex.open(art.path), load_sae(saes[art.meta["sae"]].path), load_model(MODEL)
    specials = set(model.tokenizer.all_special_tokens)
    order = (-index.column(args.by).float()).argsort()[:args.features]
    rows = []
    print(f"SAE {art.meta['sae']} ({sae.cfg.arch}, d_sae {sae.cfg.d_sae}) at {MODEL} {HOOK}; its {args.features} most "
          f"active features by {args.by}; top {args.contexts} contexts per feature")
    print(f"{'feature':>8} {'count':>7} {'components':>11} {'validated':>10} {'spearman':>9} {'top':>18} {'s':>6}")
    for f in (int(j) for j in order):
        view = index.feature(f)
        prompts = [t for ex in view.top[:args.contexts] if (t := ex.prompt(index.spaced, specials))]
        t0 = time.perf_counter()
        d = feature_drivers(model, sae, HOOK, f, prompts, validate=20)
        s = time.perf_counter() - t0
        top = d.components[0]
        rows.append({"feature": f, "count": view.count, "spearman": d.spearman, "validated": d.n_validated,
                     "top": top.node, "top_attribution": top.attribution, "top_exact": top.exact, "seconds": s})
        print(f"{f:>8} {view.count:>7} {len(d.components):>11} {d.n_validated:>10} "
              f"{'n/a' if d.spearman is None else f'{d.spearman:.3f}':>9} {top.node + f' {top.attribution:+.2f}':>18} {s:>6.2f}")
    rhos = [r["spearman"] for r in rows if r["spearman"] is not None]
    print(f"median Spearman rho {statistics.median(rhos):.3f}; min {min(rhos):.3f}; >= 0.8 on {sum(r >= 0.8 for r in rhos)} "
          f"of {len(rhos)}")
    res = Path(__file__).resolve().parent / "results"
    res.mkdir(exist_ok=True)
    (res / f"feature_drivers_{args.by}.json").write_text(json.dumps({"sae": art.meta["sae"], "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
