"""Feature index targets (issue #4): build time against bare forward passes, peak memory, and the
server-side time to open one feature.

1. Build: ``build_feature_index`` (streaming pass + logit effects + nearest features + writing;
   the UMAP map is timed separately, ``--map`` to include it) for a TopK SAE of ``--d-sae``
   features (k 32) at the model's last ``hook_resid_post`` over ``--tokens`` zoo-corpus tokens,
   against ``model(tokens)`` (full forward, logits included) over the same pre-tokenized batches.
   The SAE's weights are random (seeded) with the encoder = decoder transpose: its cost per token
   is what a trained SAE of this size costs; its features fire less selectively. The forward
   passes run once before and once after the build and their mean is the reference, so a change
   of load during the run hits both sides. Peak memory is the process's ``VmHWM`` after the build
   (it covers the forward passes too, which need far less).
2. Open: from the built index, the time of what the Features page does for one feature on the
   server: ``FeatureIndex.feature(i)``, the two histogram figures, the context HTML and the JSON
   export record; the first open (which also pays plotly's one-time set-up), then median, p99
   and max over the other ``--open-samples`` random features, index already open
   (the app caches it). Also the cold time of opening the index directory.

    .venv/bin/python bench/feature_index.py [--model tiny-b] [--tokens 1000000] [--d-sae 16384]

Prints a table and writes ``bench/results/feature_index.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

RESULTS = REPO / "bench" / "results" / "feature_index.json"


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _forward_seconds(args) -> float:
    """The bare full forward over the same batches the build streams (model loaded beforehand)."""
    from sae_core.models.texts import TextSource, texts_for_tokens
    from sae_core.models.loading import load_model, to_tokens

    model = load_model(f"zoo:{args.model}", device="cpu")
    texts = texts_for_tokens(model.tokenizer, args.tokens, TextSource().documents(1), 64, True)
    batches = [to_tokens(model, texts[i:i + 32])[:, :64] for i in range(0, len(texts), 32)]
    with torch.inference_mode():
        for b in batches[:5]:
            model(b)
        t0 = time.perf_counter()
        for b in batches:
            model(b)
    return time.perf_counter() - t0


def _build(args, out: Path) -> dict:
    from sae_core.models.texts import TextSource, texts_for_tokens
    from sae_core.features.job import build_feature_index
    from sae_core.features.config import IndexConfig
    from sae_core.models.loading import load_model
    from sae_core.sae.config import SAEConfig
    from sae_core.sae.registry import create_sae

    model = load_model(f"zoo:{args.model}", device="cpu")
    hook = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="topk", d_in=model.cfg.d_model, d_sae=args.d_sae, k=32)).eval()
    cfg = IndexConfig(n_tokens=args.tokens, feature_map=args.map)
    texts = texts_for_tokens(model.tokenizer, args.tokens, TextSource().documents(cfg.corpus_seed), 64, True)
    stages: dict[str, float] = {}
    last = [time.perf_counter(), None]

    def on_stage(name):
        now = time.perf_counter()
        if last[1]:
            stages[last[1]] = now - last[0]
        last[:] = [now, name]
    t0 = time.perf_counter()
    index = build_feature_index(model, sae, hook, texts, out, cfg, on_stage=on_stage)
    total = time.perf_counter() - t0
    stages[last[1]] = time.perf_counter() - last[0]
    return {"model": f"zoo:{args.model}", "hook": hook, "d_sae": args.d_sae, "tokens": index.info["n_tokens"],
            "build_s": total, "stages_s": stages, "build_peak_rss_mb": _peak_rss_mb(),
            "index_mb": sum(f.stat().st_size for f in out.iterdir()) / 2**20}


def _open_times(out: Path, samples: int) -> dict:
    from sae_app import contexts, feature_charts as charts
    from sae_core.features.export import feature_record
    from sae_core.features.index import FeatureIndex

    t0 = time.perf_counter()
    index = FeatureIndex.open(out)
    cold = time.perf_counter() - t0
    rng = random.Random(0)
    times = []
    for i in [rng.randrange(index.n_features) for _ in range(samples)]:
        t0 = time.perf_counter()
        view = index.feature(i)
        charts.activation_histogram(view.hist_edges, view.hist_counts)
        charts.logit_histogram(view.logit_hist_edges, view.logit_hist_counts)
        contexts.examples_html(view.top, view.max_act)
        for _, group in view.quantiles:
            contexts.examples_html(group, view.max_act)
        feature_record(view, index)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    index.overview()
    # the first open in a process also pays plotly's one-time set-up (templates, validators)
    first, rest = times[0], times[1:] or times
    return {"open_index_s": cold, "feature_ms_first": 1e3 * first,
            "feature_ms_median": 1e3 * statistics.median(rest), "feature_ms_p99": 1e3 * sorted(rest)[
                int(0.99 * (len(rest) - 1))], "feature_ms_max": 1e3 * max(rest),
            "overview_s": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny-b")
    p.add_argument("--tokens", type=int, default=1_000_000)
    p.add_argument("--d-sae", type=int, default=16384)
    p.add_argument("--map", action="store_true", help="include the UMAP map in the build")
    p.add_argument("--open-samples", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep", type=Path, default=None,
                   help="write the index here and keep it (default: a temporary directory)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # forward passes before and after the build, averaged: a machine whose load changes during
    # the run affects both sides alike
    before = _forward_seconds(args)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "index"
        res = _build(args, out)
        after = _forward_seconds(args)
        res.update(_open_times(out, args.open_samples))
    res.update(forward_s=(before + after) / 2, forward_s_before=before, forward_s_after=after)
    res["ratio_build_to_forward"] = res["build_s"] / res["forward_s"]
    res["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                      "loadavg": os.getloadavg()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    print(f"| model | d_sae | tokens | forward s | build s | build/forward | build peak RSS MB | "
          f"open feature ms (first / median / p99 / max) |\n|---|---|---|---|---|---|---|---|\n"
          f"| {res['model']} | {res['d_sae']} | {res['tokens']:,} | {res['forward_s']:.1f} | "
          f"{res['build_s']:.1f} | {res['ratio_build_to_forward']:.2f} | {res['build_peak_rss_mb']:.0f} | "
          f"{res['feature_ms_first']:.0f} / {res['feature_ms_median']:.1f} / {res['feature_ms_p99']:.1f} / "
          f"{res['feature_ms_max']:.1f} |")
    print("stages (s):", {k: round(v, 1) for k, v in res["stages_s"].items()},
          f"index {res['index_mb']:.0f} MB, open index {res['open_index_s']:.3f} s, "
          f"overview {res['overview_s']:.2f} s, load {res['machine']['loadavg']}")


if __name__ == "__main__":
    main()
