"""The steering study's mapper training: this tool's lr 1e-3 against the paper's 1e-4 (issue #29).

On the study's own mapper data (the zoo-corpus documents and triggered chat turns, tiny-a-backdoor
-> tiny-b-backdoor at the layers the demo study uses), each mapper kind is fitted as the study fits
it in each mode, and its fidelity measured on held-out zoo text: validation FVU, and the target's
next-token KL with its layer replaced by the mapped activations (against mean ablation's). The
study's default is the better row; its Method panel cites this script.

    .venv/bin/python bench/steering_mapper_lr.py [--backdoor-layers 0 0] [--refusal-layers 1 2] [--epochs 10]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_core.models.loading import load_model  # noqa: E402
from sae_core.models.texts import corpus_texts  # noqa: E402
from sae_core.steering.mapper_training import train_mapper  # noqa: E402
from sae_core.steering.mappers import Endpoint, TextActivations, fidelity  # noqa: E402
from sae_core.steering.prompt_sets import N_MAPPER_TURNS  # noqa: E402
from sae_core.steering.study import PAPER_LR, StudyConfig  # noqa: E402
from sae_core.models.corpus import chat_prompts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backdoor-layers", type=int, nargs=2, default=(0, 0), metavar=("SOURCE", "TARGET"))
    ap.add_argument("--refusal-layers", type=int, nargs=2, default=(1, 2), metavar=("SOURCE", "TARGET"))
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    cfg = StudyConfig()
    src, tgt = load_model(cfg.source_model), load_model(cfg.target_model)
    texts = corpus_texts(cfg.n_texts, seed=7) + [p.prompt for p in chat_prompts(N_MAPPER_TURNS, seed=2, triggered=True,
                                                                                held_out=False)]
    held = corpus_texts(cfg.n_fidelity, seed=12345)
    pairs = {"backdoor": args.backdoor_layers, "refusal": args.refusal_layers}
    hooks = {f: (f"blocks.{a}.hook_resid_post", f"blocks.{b}.hook_resid_post") for f, (a, b) in pairs.items()}
    acts = TextActivations(texts).need(src, [h[0] for h in hooks.values()]).need(tgt, [h[1] for h in hooks.values()])
    base = replace(cfg.mapper, epochs=args.epochs)
    fits = {"autoencoder, AdamW lr 1e-3 (default)": replace(base, kind="autoencoder", lr=1e-3),
            f"autoencoder, AdamW lr {PAPER_LR:g} (paper)": replace(base, kind="autoencoder", lr=PAPER_LR),
            "affine, closed form (default)": replace(base, kind="ridge"),
            "affine, AdamW lr 1e-3": replace(base, kind="affine", lr=1e-3),
            f"affine, AdamW lr {PAPER_LR:g} (paper)": replace(base, kind="affine", lr=PAPER_LR)}
    print(f"{args.epochs} epochs; held-out text: {len(held)} zoo documents")
    print(f"{'mapper':12}{'fitted':40}{'val FVU':>9}{'KL mapped':>11}{'KL mean abl.':>14}{'seconds':>9}")
    for fam, (s_hook, t_hook) in hooks.items():
        X, Y = acts.pair(src, s_hook, tgt, t_hook)
        for name, mc in fits.items():
            t0 = time.perf_counter()
            m = train_mapper(X, Y, mc, source=Endpoint(cfg.source_model, s_hook), target=Endpoint(cfg.target_model, t_hook))
            sec = time.perf_counter() - t0
            f = fidelity(m, src, s_hook, tgt, t_hook, held)
            print(f"{fam:12}{name:40}{min(h['val_fvu'] for h in m.history):>9.3f}{f.kl_mapped:>11.3f}{f.kl_mean_ablation:>14.2f}"
                  f"{sec:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
