"""The demo workspace: the artifacts every page shows on first open, built idempotently.

Each step is a named function ``(workspace, on_progress) -> Artifact`` that returns at once when
its artifact already exists and resumes when it was interrupted. Later capabilities append their
steps to ``DEMO_STEPS``; the whole demo must stay under 10 minutes on a 2-core CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sae_core.workspace import Artifact, Workspace

DEMO_MODEL = "zoo:tiny-a"
DEMO_HOOK = "blocks.1.hook_resid_post"
DEMO_TOKENS = 100_000

Progress = Callable[[int, int], None]


def _harvest_demo_activations(ws: Workspace, on_progress: Progress | None) -> Artifact:
    from sae_core.activations import harvest_to_workspace

    return harvest_to_workspace(ws, DEMO_MODEL, DEMO_HOOK, n_tokens=DEMO_TOKENS, seed=0,
                                on_progress=on_progress)


DEMO_SWEEP = dict(k=16, d_sae=512, ls=(1.0, 2.0, 4.0, 8.0, 16.0), scorings=("l2", "entropy"),
                  tokens=1_000_000, batch_size=1024)
# 1M tokens = 10 passes over the 100k harvested: CE loss recovered 0.995 (BatchTopK) and 0.998
# (TopK), against 0.94 / 0.99 at 200k; the whole demo took 4 min on the idle 2-core machine.


def _demo_sweep(ws: Workspace, on_progress: Progress | None) -> Artifact:
    from sae_core.models.loading import load_model
    from sae_core.training.sweep import SweepConfig, run_sweep

    acts = _harvest_demo_activations(ws, None)  # already built by the step before: returns at once
    sc = SweepConfig(**DEMO_SWEEP)

    return run_sweep(ws, acts, sc, model=load_model(DEMO_MODEL),
                     on_progress=on_progress and (lambda done, total, text: on_progress(done, total)))


DEMO_INDEX = dict(n_tokens=50_000)


def _demo_indexes(ws: Workspace, on_progress: Progress | None) -> Artifact:
    """A feature index for every SAE of the demo sweep, so any point of its curves opens features."""
    from sae_core.features.job import index_to_workspace
    from sae_core.features.config import IndexConfig
    from sae_core.models.loading import load_model
    from sae_core.sae.io import load_sae
    from sae_core.training.sweep import load_sweep_table

    sweep = _demo_sweep(ws, None)  # built by the step before: returns at once
    names = list(load_sweep_table(sweep)["sae"])
    cfg = IndexConfig(**DEMO_INDEX)
    model = None
    arts = []
    for i, name in enumerate(names):
        sae = load_sae(ws.get("sae", name).path)
        if model is None:
            model = load_model(DEMO_MODEL)
        arts.append(index_to_workspace(ws, sae, DEMO_MODEL, DEMO_HOOK, cfg, sae_source=name, model=model))
        if on_progress is not None:
            on_progress(i + 1, len(names))
    return arts[0]


def _demo_steering(ws: Workspace, on_progress: Progress | None) -> Artifact:
    """The Steering & switches page's study: backdoor vectors (native, transferred from tiny-a,
    random), the transfer mapper and a safety switch on zoo:tiny-b-backdoor (about 40 s)."""
    from sae_core.steering.job import steering_study_to_workspace
    from sae_core.steering.study import StudyConfig

    return steering_study_to_workspace(
        ws, StudyConfig(), on_progress=on_progress and (lambda done, total, text: on_progress(done, total)))


def _demo_capabilities(ws: Workspace, on_progress: Progress | None) -> Artifact:
    """The page's corrupted-capabilities chart: per layer of zoo:tiny-b-corrupt, removal vectors
    (native, transferred from tiny-a-corrupt, random) and the fate of the fact behind the trigger."""
    from sae_core.steering.job import capabilities_to_workspace

    return capabilities_to_workspace(
        ws, on_progress=on_progress and (lambda done, total, text: on_progress(done, total)))


def _demo_universality(ws: Workspace, on_progress: Progress | None) -> Artifact:
    """The Universality page's result: zoo:tiny-a's last layer against zoo:tiny-b's, SAEs trained
    for both, every measure against its nulls."""
    from sae_core.universality.job import UniversalityConfig, universality_to_workspace

    return universality_to_workspace(
        ws, UniversalityConfig(), on_progress=on_progress and (lambda done, total, text: on_progress(done, total)))


DEMO_CIRCUIT_PROMPTS = 32  # per task (the filter keeps ~31): the study took 60 s on the 2-core machine


def demo_circuits_config():
    from sae_core.circuits.job import CircuitStudyConfig

    return CircuitStudyConfig(n_prompts=DEMO_CIRCUIT_PROMPTS)


def _demo_circuits(ws: Workspace, on_progress: Progress | None) -> Artifact:
    """The Circuits page's study: digits, number words and months on zoo:tiny-b (nodes, EAP edges,
    validation, size curve, head analyses, cross-task comparison)."""
    from sae_core.circuits.job import circuits_to_workspace

    return circuits_to_workspace(ws, demo_circuits_config(),
                                 on_progress=on_progress and (lambda done, total, text: on_progress(done, total)))


@dataclass(frozen=True)
class DemoStep:
    name: str
    run: Callable[[Workspace, Progress | None], Artifact]


DEMO_STEPS: list[DemoStep] = [
    DemoStep(f"activations of {DEMO_MODEL} at {DEMO_HOOK} ({DEMO_TOKENS:,} tokens)",
             _harvest_demo_activations),
    DemoStep("Sampled-SAE l-sweep (both scoring rules, BatchTopK and TopK references)", _demo_sweep),
    DemoStep(f"feature indexes of the sweep's SAEs ({DEMO_INDEX['n_tokens']:,} tokens each)", _demo_indexes),
    DemoStep("steering study: backdoor vectors, transfer from tiny-a, safety switch", _demo_steering),
    DemoStep("corrupted capabilities: per-layer removal on zoo:tiny-b-corrupt", _demo_capabilities),
    DemoStep("feature universality: zoo:tiny-a against zoo:tiny-b (SAEs, matching, measures, nulls)",
             _demo_universality),
    DemoStep("circuits: digits, number words and months on zoo:tiny-b (nodes, edges, heads, tasks compared)",
             _demo_circuits),
]


def build_demo(ws: Workspace,
               on_step: Callable[[DemoStep], Progress | None] | None = None) -> list[Artifact]:
    """Run every demo step in order; ``on_step(step)`` may return a progress callback for it."""
    return [step.run(ws, on_step(step) if on_step else None) for step in DEMO_STEPS]
