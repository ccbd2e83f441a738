"""Harvest throughput vs a bare forward pass (issue "done when": harvest >= 80% of forward tok/s).

For each model (zoo names, or ``random:pythia-160m`` and other full-width random architectures,
issue #15) and hook (the last layer's and a middle layer's ``hook_resid_post``), over the
same ~200k corpus tokens in the same batches:

- forward: ``model(tokens_BT)`` (full forward, logits included) over pre-tokenized batches;
- harvest: ``harvest_activations`` end to end (tokenizing, early-exit forward, masking, shard
  writes with fsync) into a fresh directory.

tok/s counts real (non-pad) token positions, the same number for both. The rounds alternate the
two and each keeps its best time, so a busy machine penalises both alike.

    .venv/bin/python bench/harvest_throughput.py [--tokens 200000] [--rounds 3] [--threads N] \
        [--models tiny-a tiny-b random:pythia-160m] [--device cpu|cuda]

Prints one table and writes ``bench/results/harvest_throughput.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from sae_core.activations.harvest import harvest_activations  # noqa: E402
from sae_core.models.texts import TextSource, texts_for_tokens  # noqa: E402
from sae_core.models.loading import load_model, to_tokens  # noqa: E402
from sae_core.models.zoo import zoo_dir  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "harvest_throughput.json"


def _sync(model) -> None:
    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()


def _forward_seconds(model, batches) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        for tokens_BT in batches:
            model(tokens_BT)
    _sync(model)
    return time.perf_counter() - t0


def _harvest_seconds(model, hook, texts, args, scratch: Path) -> float:
    out = scratch / "store"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    harvest_activations(model, hook, texts, out, model_name="bench", batch_size=args.batch_size,
                        context_size=args.context_size)
    dt = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return dt


def bench_model(name: str, args, scratch: Path) -> list[dict]:
    model = load_model(name, device=args.device)
    n_layers = model.cfg.n_layers
    hooks = [f"blocks.{n_layers - 1}.hook_resid_post", f"blocks.{(n_layers - 1) // 2}.hook_resid_post"]
    texts = texts_for_tokens(model.tokenizer, args.tokens, TextSource().documents(0),
                             context_size=args.context_size, exclude_special=False)
    batches = [to_tokens(model, texts[i:i + args.batch_size])[:, :args.context_size].to(args.device)
               for i in range(0, len(texts), args.batch_size)]
    n_tokens = sum(int((b != model.tokenizer.pad_token_id).sum()) for b in batches)

    _forward_seconds(model, batches[:10])  # warm-up: allocator, kernels, hook setup
    for hook in hooks:
        _harvest_seconds(model, hook, texts[: 10 * args.batch_size], args, scratch)

    best_fwd, best_harvest = float("inf"), {h: float("inf") for h in hooks}
    for _ in range(args.rounds):
        best_fwd = min(best_fwd, _forward_seconds(model, batches))
        for hook in hooks:
            best_harvest[hook] = min(best_harvest[hook], _harvest_seconds(model, hook, texts, args, scratch))
    return [{"model": name, "hook": h, "tokens": n_tokens,
             "forward_tok_s": n_tokens / best_fwd, "harvest_tok_s": n_tokens / best_harvest[h],
             "ratio": best_fwd / best_harvest[h]} for h in dict.fromkeys(hooks)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--context-size", type=int, default=64)
    ap.add_argument("--models", nargs="+", default=["tiny-a", "tiny-b", "random:pythia-160m"],
                    help="zoo names (tiny-a) or full names (zoo:tiny-a, random:pythia-160m)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads (0: torch's default). 1 avoids oversubscription "
                         "when another job shares the cores, which makes 2-thread timings swing 5x")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="harvest-bench-") as tmp:
        for name in args.models:
            name = name if ":" in name else f"zoo:{name}"
            zoo_name = name[len("zoo:"):] if name.startswith("zoo:") else None
            if zoo_name and not (zoo_dir() / zoo_name / "config.json").exists():
                print(f"skipping {name}: not built yet ({zoo_dir() / zoo_name} has no config.json)")
                skipped.append(name)
                continue
            rows += bench_model(name, args, Path(tmp))

    print(f"\n{'model':<20} {'hook':<26} {'tokens':>8} {'forward tok/s':>14} {'harvest tok/s':>14} {'ratio':>6}")
    for r in rows:
        print(f"{r['model']:<20} {r['hook']:<26} {r['tokens']:>8} {r['forward_tok_s']:>14,.0f} "
              f"{r['harvest_tok_s']:>14,.0f} {r['ratio']:>6.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "rows": rows, "skipped": skipped, "settings": vars(args),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "platform": platform.platform()},
    }, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
