"""Generation speed with interventions against plain generation (issue #12: <= 1.3x).

Greedy generation of ``--tokens`` new tokens for ``--prompts`` held-out triggered chat prompts
(batched by length, as ``greedy_continuations`` does) on ``zoo:tiny-b-backdoor``, with the KV
cache, under: nothing; the native backdoor vector at the trigger; the safety switch (a mapper at
every position); both. Without the cache too, the way the zoo's scoring generated before (the
whole prefix re-run per token). Interventions are built from a fresh steering study in a
temporary workspace unless ``--workspace`` holds one. Best of ``--rounds`` per row.

    .venv/bin/python bench/steering_generation.py [--prompts 100] [--tokens 20] [--rounds 3] [--workspace DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_core.models.corpus import chat_prompts  # noqa: E402
from sae_core.models.generation import greedy_continuations  # noqa: E402
from sae_core.models.loading import load_model  # noqa: E402
from sae_core.steering.interventions import intervene  # noqa: E402
from sae_core.steering.job import steering_study_to_workspace  # noqa: E402
from sae_core.steering.study import KIND, Study, StudyConfig, trigger_positions, vector_intervention  # noqa: E402
from sae_core.steering.switches import switch_intervention  # noqa: E402
from sae_core.workspace import Workspace  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--tokens", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workspace", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(2)
    ws = Workspace(args.workspace or Path(tempfile.mkdtemp()) / "ws")
    arts = ws.list(KIND)
    art = arts[0] if arts else steering_study_to_workspace(ws, StudyConfig())
    study = Study.open(art.path)
    model = load_model(study.config["target_model"])
    native = vector_intervention(study.vector("native"), -1.0, trigger_positions(model.tokenizer), "native")
    switch = switch_intervention(study.mapper("switch"), study.config["target_model"])
    prompts = [q.prompt for q in chat_prompts(args.prompts, triggered=True)]
    rows = {"plain": [], "native vector": [native], "switch": [switch], "vector + switch": [native, switch]}

    def best(specs, use_cache=True) -> float:
        times = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            with intervene(model, specs):
                greedy_continuations(model, model.tokenizer, prompts, args.tokens, use_cache=use_cache)
            times.append(time.perf_counter() - t)
        return min(times)
    best([])  # warm-up
    base = best([])
    print(f"{args.prompts} prompts x {args.tokens} new tokens on {study.config['target_model']}, best of "
          f"{args.rounds} (2 threads)")
    print(f"{'condition':28} {'seconds':>8} {'x plain':>8}")
    for name, specs in rows.items():
        s = base if name == "plain" else best(specs)
        print(f"{name:28} {s:>8.3f} {s / base:>8.2f}")
    s = best([], use_cache=False)
    print(f"{'plain, no KV cache':28} {s:>8.3f} {s / base:>8.2f}")


if __name__ == "__main__":
    main()
