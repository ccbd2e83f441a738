"""The demo's steps: the artifacts every page shows on first open, each built idempotently.

Each step is a named function ``(workspace, profile, on_progress) -> Artifact`` that returns at
once when its artifact already exists and resumes when it was interrupted. A profile sets the
steps' sizes: ``full`` is what ``make app`` builds (measured per step in ``EXPECTED_S``, the table
in README), ``small`` builds the same pages at test size in about a minute (the browser tests'
shared workspace, and the tests' small configurations in ``tests/helpers.py``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from sae_core.demo.progress import DemoError
from sae_core.workspace import Artifact, Workspace

DEMO_MODEL = "zoo:tiny-a"
DEMO_HOOK = "blocks.1.hook_resid_post"
PROFILE_ENV = "SAE_STUDIO_DEMO_PROFILE"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class DemoProfile:
    """How big each demo step is. ``None`` for a study: its config's defaults."""
    name: str
    tokens: int
    sweep: dict
    index_tokens: int
    small_studies: bool = False  # the studies at the tests' sizes (``small_*_config`` below)
    circuit_prompts: int = 32    # per task (the filter keeps ~31): the study took 60 s on 2 cores
    expected_s: tuple[float, ...] = field(default=())  # seconds per step on the idle 2-core machine


PROFILES = {
    # 1M sweep tokens = 10 passes over the 100k harvested: CE loss recovered 0.995 (BatchTopK) and
    # 0.998 (TopK), against 0.94 / 0.99 at 200k (before gradient clipping; with it 0.999 and 0.999).
    "full": DemoProfile("full", tokens=100_000,
                        sweep=dict(k=16, d_sae=512, ls=(1.0, 2.0, 4.0, 8.0, 16.0), scorings=("l2", "entropy"),
                                   tokens=1_000_000, batch_size=1024),
                        index_tokens=50_000, expected_s=(14, 95, 45, 40, 125, 40, 90, 55)),
    "small": DemoProfile("small", tokens=12_000,
                         sweep=dict(k=4, d_sae=64, ls=(1.0, 4.0, 16.0), scorings=("l2", "entropy"),
                                    tokens=8192, batch_size=512),
                         index_tokens=4_000, small_studies=True, circuit_prompts=24,
                         expected_s=(4, 10, 15, 10, 45, 20, 15, 25)),
}


def profile_named(name: str | None = None) -> DemoProfile:
    """The profile called ``name`` (default: ``$SAE_STUDIO_DEMO_PROFILE``, else ``full``)."""
    name = name or os.environ.get(PROFILE_ENV, "").strip() or "full"
    if name not in PROFILES:
        raise DemoError(f"demo profile {name!r} does not exist: use one of {', '.join(PROFILES)}")
    return PROFILES[name]


# --- the studies at test size (the small profile; tests/helpers.py hands them to the tests) ------

def small_capabilities_config():
    from sae_core.steering.capabilities import CapabilitiesConfig
    from sae_core.steering.mappers import MapperConfig

    return CapabilitiesConfig(n_pairs=24, n_texts=300, n_eval=24,
                              mapper=MapperConfig(kind="autoencoder", lr=1e-3, epochs=4))


def small_study_config():
    from sae_core.steering.mappers import MapperConfig
    from sae_core.steering.study import StudyConfig

    return StudyConfig(n_pairs=30, n_texts=400, n_eval=16, n_select=16, n_grid=12, n_coherence=20,
                       n_fidelity=30, mapper=MapperConfig(lr=1e-3, epochs=4))


def small_gate_config():
    """The gated switch at test size: a smaller SAE on fewer tokens (the gate is found alike)."""
    from sae_core.steering.gated_switch import GateConfig
    from sae_core.steering.gating import GateSAEConfig

    return GateConfig(sae_training=GateSAEConfig(d_sae=256, train_tokens=100_000))


def small_universality_config():
    from sae_core.universality.analysis import AnalysisConfig
    from sae_core.universality.job import UniversalityConfig

    return UniversalityConfig(n_tokens=30_000, d_sae=256, k=8, train_tokens=200_000,
                              analysis=AnalysisConfig(runs=20, runs_small=30, bootstrap_runs=20))


def small_circuits_config():
    from sae_core.circuits.job import CircuitStudyConfig

    return CircuitStudyConfig(tasks=("months", "digits"), n_prompts=24, curve_thresholds=(20.0, 40.0),
                              n_random=3, validate_top=8)


def demo_circuits_config(profile: DemoProfile | None = None):
    """The circuits study the demo builds (and the Circuits page's build button)."""
    from sae_core.circuits.job import CircuitStudyConfig

    profile = profile or profile_named()
    return small_circuits_config() if profile.small_studies else CircuitStudyConfig(n_prompts=profile.circuit_prompts)


def _texts(on_progress: Progress | None):
    """A library progress callback ``(done, total, text)`` from the demo's ``(done, total)``."""
    return on_progress and (lambda done, total, text=None: on_progress(done, total))


# --- the steps ----------------------------------------------------------------------------------

def _harvest(ws: Workspace, p: DemoProfile, on_progress: Progress | None) -> Artifact:
    from sae_core.activations import harvest_to_workspace

    return harvest_to_workspace(ws, DEMO_MODEL, DEMO_HOOK, n_tokens=p.tokens, seed=0, on_progress=on_progress)


def _sweep(ws: Workspace, p: DemoProfile, on_progress: Progress | None) -> Artifact:
    from sae_core.models.loading import load_model
    from sae_core.training.sweep import SweepConfig, run_sweep

    acts = _harvest(ws, p, None)  # already built by the step before: returns at once
    return run_sweep(ws, acts, SweepConfig(**p.sweep), model=load_model(DEMO_MODEL), on_progress=_texts(on_progress))


def _indexes(ws: Workspace, p: DemoProfile, on_progress: Progress | None) -> Artifact:
    """A feature index for every SAE of the demo sweep, so any point of its curves opens features."""
    from sae_core.features.config import IndexConfig
    from sae_core.features.job import index_to_workspace
    from sae_core.models.loading import load_model
    from sae_core.sae.io import load_sae
    from sae_core.training.sweep import load_sweep_table

    names = list(load_sweep_table(_sweep(ws, p, None))["sae"])  # built by the step before
    cfg = IndexConfig(n_tokens=p.index_tokens)
    model = load_model(DEMO_MODEL)
    arts = []
    for i, name in enumerate(names):
        sae = load_sae(ws.get("sae", name).path)
        arts.append(index_to_workspace(ws, sae, DEMO_MODEL, DEMO_HOOK, cfg, sae_source=name, model=model))
        if on_progress is not None:
            on_progress(i + 1, len(names))
    return arts[0]


def small_evaluation_config():
    from sae_core.evaluation.config import AbsorptionConfig, EvaluationConfig, ProbingConfig

    # the k the page draws (1 and 5), one random draw: a few seconds for the small sweep
    return EvaluationConfig(probing=ProbingConfig(ks=(1, 5), examples=60, documents=40, random_draws=1),
                            absorption=AbsorptionConfig(n_docs=80))


def _evaluation(ws: Workspace, p: DemoProfile, on_progress: Progress | None) -> Artifact:
    """Sparse probing, absorption and the activation lottery for every SAE of the demo sweep,
    written into its table (the Sampled-SAE page's trade-off view)."""
    from sae_core.evaluation.config import EvaluationConfig
    from sae_core.evaluation.job import evaluate_sweep
    from sae_core.models.loading import load_model

    sweep = _sweep(ws, p, None)  # built by the step before
    cfg = small_evaluation_config() if p.small_studies else EvaluationConfig()
    evaluate_sweep(ws, sweep, cfg, model=load_model(DEMO_MODEL), on_progress=_texts(on_progress))
    return sweep


def _steering(ws: Workspace, p: DemoProfile, on_progress: Progress | None) -> Artifact:
    """Backdoor vectors (native, transferred from tiny-a, random), the transfer mapper and a
    safety switch on zoo:tiny-b-backdoor; then the switch gated by a feature of an SAE of it."""
    from sae_core.steering.gated_switch import STEPS as GATE_STEPS, GateConfig
    from sae_core.steering.job import gate_to_workspace, steering_study_to_workspace
    from sae_core.steering.study import STEPS, StudyConfig

    cfg = small_study_config() if p.small_studies else StudyConfig()
    total = STEPS + GATE_STEPS

    def part(offset: int):  # the two jobs' steps as one bar
        return on_progress and (lambda done, _total, text=None: on_progress(offset + done, total))
    art = steering_study_to_workspace(ws, cfg, on_progress=part(0))
    gate_to_workspace(ws, art, small_gate_config() if p.small_studies else GateConfig(), on_progress=part(STEPS))
    return art


def _capabilities(ws: Workspace, p: DemoProfile, on_progress: Progress | None) -> Artifact:
    """Per layer of zoo:tiny-b-corrupt: removal vectors (native, transferred from tiny-a-corrupt,
    random) and the fate of the fact behind the trigger."""
    from sae_core.steering.capabilities import CapabilitiesConfig
    from sae_core.steering.job import capabilities_to_workspace

    cfg = small_capabilities_config() if p.small_studies else CapabilitiesConfig()
    return capabilities_to_workspace(ws, cfg, on_progress=_texts(on_progress))


def _universality(ws: Workspace, p: DemoProfile, on_progress: Progress | None) -> Artifact:
    """zoo:tiny-a's last layer against zoo:tiny-b's: SAEs trained for both, every measure against
    its nulls."""
    from sae_core.universality.job import UniversalityConfig, universality_to_workspace

    cfg = small_universality_config() if p.small_studies else UniversalityConfig()
    return universality_to_workspace(ws, cfg, on_progress=_texts(on_progress))


def _circuits(ws: Workspace, p: DemoProfile, on_progress: Progress | None) -> Artifact:
    """Digits, number words and months on zoo:tiny-b: nodes, EAP edges, validation, size curve,
    head analyses, cross-task comparison."""
    from sae_core.circuits.job import circuits_to_workspace

    return circuits_to_workspace(ws, demo_circuits_config(p), on_progress=_texts(on_progress))


@dataclass(frozen=True)
class DemoStep:
    name: str
    run: Callable[[Workspace, DemoProfile, Progress | None], Artifact]
    kinds: tuple[str, ...]  # the artifact kinds it makes: a page whose kind is pending shows the build


DEMO_STEPS: list[DemoStep] = [
    DemoStep(f"activations of {DEMO_MODEL} at {DEMO_HOOK}", _harvest, ("activations",)),
    DemoStep("Sampled-SAE l-sweep (both scoring rules, BatchTopK and TopK references)", _sweep, ("sweep", "sae")),
    DemoStep("feature indexes of the sweep's SAEs", _indexes, ("feature_index",)),
    DemoStep("downstream evaluation of the sweep's SAEs: sparse probing, absorption, the activation lottery",
             _evaluation, ("evaluation",)),
    DemoStep("steering study: backdoor vectors, transfer from tiny-a, safety switch, the switch gated by a feature",
             _steering, ("steering", "gated_switch")),
    DemoStep("corrupted capabilities: per-layer removal on zoo:tiny-b-corrupt", _capabilities, ("capabilities",)),
    DemoStep("feature universality: zoo:tiny-a against zoo:tiny-b (SAEs, matching, measures, nulls)",
             _universality, ("universality",)),
    DemoStep("circuits: digits, number words and months on zoo:tiny-b (nodes, edges, heads, tasks compared)",
             _circuits, ("circuits",)),
]
for _p in PROFILES.values():
    assert len(_p.expected_s) == len(DEMO_STEPS), f"profile {_p.name}: one expected time per step"
