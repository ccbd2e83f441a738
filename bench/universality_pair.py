"""One universality layer pair at issue #13's size: 4096-feature SAEs on both models, 200k tokens.

Targets: correlation, matching, SVCCA, RSA, CKA (both), mutual kNN and the 100-run nulls finish
in under 60 s; the correlation pass runs within 2x of one float32 matmul of the same shape
([S_a, N] x [N, S_b]), measured side by side on the same codes (the dense product is summed over
the same batches, so it never holds N x S of either side).

Issue #29: the same code pass over the SAEs' dense ReLU pre-activations (``codes="pre_acts"``, the
authors' computation) is timed beside the sparse one: a dense product per batch, the cost of
the paper mode.

The SAEs (BatchTopK, k 32) are trained first on the paired harvest (untimed), or reused from
``--workspace``. Writes ``bench/results/universality_pair.json``.

    .venv/bin/python bench/universality_pair.py [--tokens 200000] [--d-sae 4096] [--train-tokens 1000000] [--workspace DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sae_core.activations.paired import open_paired, paired_to_workspace  # noqa: E402
from sae_core.models.loading import load_model  # noqa: E402
from sae_core.universality.analysis import AnalysisConfig, analyse  # noqa: E402
from sae_core.universality.codes import code_pass  # noqa: E402
from sae_core.universality.correlation import CorrelationAccumulator  # noqa: E402
from sae_core.universality.job import UniversalityConfig, _sae_for  # noqa: E402
from sae_core.universality.matching import MatchConfig, match, nonconcept_ids  # noqa: E402
from sae_core.workspace import Workspace  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=200_000)
    p.add_argument("--d-sae", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--train-tokens", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--workspace", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(2)
    ws = Workspace(args.workspace or Path(tempfile.mkdtemp()) / "ws")
    cfg = UniversalityConfig(n_tokens=args.tokens, d_sae=args.d_sae, k=args.k, train_tokens=args.train_tokens)
    t = time.perf_counter()
    pair_art = paired_to_workspace(ws, (cfg.model_a, cfg.hook_a), (cfg.model_b, cfg.hook_b), n_tokens=cfg.n_tokens)
    pair = open_paired(ws, pair_art)
    acts = [ws.get("activations", n) for n in pair_art.meta["activations"]]
    sae_a, _ = _sae_for(ws, None, acts[0], cfg.model_a, cfg.hook_a, cfg, lambda text, f: None)
    sae_b, _ = _sae_for(ws, None, acts[1], cfg.model_b, cfg.hook_b, cfg, lambda text, f: None)
    print(f"setup (harvest, SAE training; untimed): {time.perf_counter() - t:.0f} s")
    tok = load_model(cfg.model_a).tokenizer
    special = set(tok.all_special_ids)

    stages = {}
    t = time.perf_counter()
    cp = code_pass(pair, sae_a, sae_b, drop_ids=special)
    stages["code pass (encode both, correlation, top tokens)"] = time.perf_counter() - t
    t = time.perf_counter()
    code_pass(pair, sae_a, sae_b, drop_ids=special, codes="pre_acts")
    t_pre = time.perf_counter() - t
    t = time.perf_counter()
    m = match(cp.correlation, MatchConfig(), top_a=cp.top_a, top_b=cp.top_b, nonconcept=nonconcept_ids(tok))
    stages["matching and filters"] = time.perf_counter() - t
    t = time.perf_counter()
    res = analyse(sae_a.W_dec.detach().double().numpy(), sae_b.W_dec.detach().double().numpy(), m,
                  AnalysisConfig(runs=args.runs), live_a=cp.correlation.alive_a.numpy(),
                  live_b=cp.correlation.alive_b.numpy())
    stages[f"measures, {res['runs']}-run nulls, intervals"] = time.perf_counter() - t
    total = sum(stages.values())

    # the correlation pass against one dense float32 matmul of the same shape, on the same codes
    acc = CorrelationAccumulator(args.d_sae, args.d_sae)
    dense = torch.zeros(args.d_sae, args.d_sae)
    t_corr = t_dense = 0.0
    with torch.no_grad():
        for shard in range(len(pair.a.shard_rows)):
            xa, _ = pair.a.read_shard(shard)
            xb, _ = pair.b.read_shard(shard)
            for s in range(0, xa.shape[0], 4096):
                za, zb = sae_a.encode(xa[s:s + 4096]), sae_b.encode(xb[s:s + 4096])
                t0 = time.perf_counter()
                acc.update(za, zb)
                t1 = time.perf_counter()
                dense.addmm_(za.t(), zb)
                t_dense += time.perf_counter() - t1
                t_corr += t1 - t0
    print(f"{args.tokens:,} paired tokens, SAEs of {args.d_sae} (k {args.k}), {len(m)} pairs after filtering "
          f"(load {os.getloadavg()[0]:.2f})")
    for name, sec in stages.items():
        print(f"  {name:52} {sec:7.1f} s")
    print(f"  {'total':52} {total:7.1f} s   (target < 60 s)")
    print(f"correlation accumulation {t_corr:.1f} s against the dense float32 matmul {t_dense:.1f} s: "
          f"{t_corr / t_dense:.2f}x (target <= 2x)")
    sparse_pass = stages["code pass (encode both, correlation, top tokens)"]
    print(f"code pass over dense pre-activations (the paper mode) {t_pre:.1f} s against {sparse_pass:.1f} s over the "
          f"sparse codes: {t_pre / sparse_pass:.2f}x")
    for name, s in res["scores"].items():
        print(f"  {name:14} {s['value']:.3f}  shuffled null {s['shuffled']['null_mean']:.3f}  p {s['shuffled']['p']:.3f}")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "universality_pair.json").write_text(json.dumps({
        "tokens": args.tokens, "d_sae": args.d_sae, "k": args.k, "n_pairs": len(m), "stages_s": stages,
        "total_s": total, "correlation_s": t_corr, "dense_matmul_s": t_dense, "pre_acts_code_pass_s": t_pre, "load": os.getloadavg()[0],
        "scores": {k: v["value"] for k, v in res["scores"].items()}}, indent=2))


if __name__ == "__main__":
    main()
