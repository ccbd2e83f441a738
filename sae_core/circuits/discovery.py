"""Node discovery by iterative mean-ablation pruning (arXiv 2311.04131), single-component ablation
scores, and the circuit size vs performance curve against random circuits.

Pruning starts from every component. A backward sweep visits layers last to first (each layer's
MLP, then its heads), a forward sweep first to last (heads, then the MLP); a component is removed
when the circuit without it loses less than ``threshold`` percentage points of performance,
measured against the full model (``reference="full"``, the authors' code: ``100 - new < T``, so the
circuit never falls below 100 - T) or against the current circuit (``"current"``: the losses add
up; on zoo B it prunes digits down to two components at ~26%).
Sweeps repeat until a round removes nothing.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Callable

from sae_core.circuits.ablation import MEANS_FROM, Evaluator, ModelShape, head_name, mlp_name
from sae_core.circuits.metrics import TaskMetrics
from sae_core.circuits.tasks import CircuitError, TaskSet

SWEEPS = ("backward", "forward")
REFERENCES = ("current", "full")
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class DiscoveryConfig:
    threshold: float = field(default=20.0, metadata={  # percentage points of performance
        "help": "Pruning threshold T, in percentage points of performance."})
    reference: str = field(default="full", metadata={  # what the drop is measured from
        "help": "Drop measured from the full model (the authors') or the current circuit."})
    sweeps: tuple[str, ...] = ("backward", "forward")
    max_rounds: int = 10
    means_from: str = "corrupt"                     # the prompts the ablation means are taken over

    def __post_init__(self):
        if not 0 <= self.threshold <= 100:
            raise CircuitError(f"threshold={self.threshold}: give a drop in percentage points, 0..100 (20 in the paper)")
        if self.reference not in REFERENCES:
            raise CircuitError(f"reference={self.reference!r}: choose one of {', '.join(REFERENCES)}")
        if not self.sweeps or (bad := [s for s in self.sweeps if s not in SWEEPS]):
            raise CircuitError(f"sweeps={list(self.sweeps)}: give one or more of {', '.join(SWEEPS)}")
        if self.max_rounds < 1:
            raise CircuitError(f"max_rounds={self.max_rounds}: give at least 1")
        if self.means_from not in MEANS_FROM:
            raise CircuitError(f"means_from={self.means_from!r}: choose one of {', '.join(MEANS_FROM)}")

    def to_json(self) -> dict:
        return {**asdict(self), "sweeps": list(self.sweeps)}


@dataclass(frozen=True)
class Step:
    round: int
    sweep: str
    node: str
    performance: float   # of the circuit without the node
    removed: bool


@dataclass(frozen=True)
class NodeCircuit:
    task: str
    nodes: list[str]            # kept components, in layer order
    metrics: TaskMetrics
    cfg: DiscoveryConfig
    steps: list[Step] = field(default_factory=list)

    @property
    def performance(self) -> float:
        return self.metrics.performance

    def heads(self) -> list[str]:
        return [n for n in self.nodes if n.startswith("a")]

    def to_json(self) -> dict:
        return {"task": self.task, "nodes": self.nodes, "metrics": self.metrics.to_json(), "cfg": self.cfg.to_json(),
                "steps": [asdict(s) for s in self.steps]}

    @classmethod
    def from_json(cls, data: dict) -> "NodeCircuit":
        cfg = DiscoveryConfig(**{**data["cfg"], "sweeps": tuple(data["cfg"]["sweeps"])})
        return cls(data["task"], list(data["nodes"]), TaskMetrics(**data["metrics"]), cfg,
                   [Step(**s) for s in data.get("steps", [])])


def sweep_order(shape: ModelShape, sweep: str) -> list[str]:
    if sweep == "backward":
        return [n for layer in reversed(range(shape.n_layers))
                for n in [mlp_name(layer)] + [head_name(layer, h) for h in range(shape.n_heads)]]
    return shape.components()


def discover_nodes(model, task: TaskSet, cfg: DiscoveryConfig = DiscoveryConfig(),
                   evaluator: Evaluator | None = None, on_progress: Progress | None = None) -> NodeCircuit:
    ev = evaluator or Evaluator(model, task, means_from=cfg.means_from)
    order = ev.shape.components()
    circuit = list(order)
    current = ev.performance(circuit)
    steps: list[Step] = []
    per_round = len(order) * len(cfg.sweeps)
    for rnd in range(cfg.max_rounds):
        changed = False
        for s, sweep in enumerate(cfg.sweeps):
            for i, node in enumerate(sweep_order(ev.shape, sweep)):
                if on_progress:
                    on_progress(rnd * per_round + s * len(order) + i, cfg.max_rounds * per_round,
                                f"round {rnd + 1}, {sweep} sweep: {node} ({len(circuit)} components kept)")
                if node not in circuit:
                    continue
                trial = [n for n in circuit if n != node]
                perf = ev.performance(trial)
                reference = current if cfg.reference == "current" else 100.0
                removed = reference - perf < cfg.threshold
                steps.append(Step(rnd, sweep, node, perf, removed))
                if removed:
                    circuit, current, changed = trial, perf, True
        if not changed:
            break
    kept = [n for n in order if n in circuit]
    return NodeCircuit(task.cfg.task, kept, ev.metrics(kept), cfg, steps)


def ablation_scores(evaluator: Evaluator) -> dict[str, float]:
    """Performance (%) of the model with only that component mean-ablated, per component."""
    every = evaluator.shape.components()
    return {node: evaluator.performance([n for n in every if n != node]) for node in every}


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    size: int                   # components kept
    n_heads: int
    performance: float
    random_performance: list[float]  # random circuits of the same size

    def to_json(self) -> dict:
        return asdict(self)


def size_curve(model, task: TaskSet, thresholds: list[float], base: DiscoveryConfig = DiscoveryConfig(),
               n_random: int = 8, seed: int = 0, evaluator: Evaluator | None = None,
               on_progress: Progress | None = None, found: NodeCircuit | None = None) -> list[CurvePoint]:
    """Discovery at each threshold, and ``n_random`` random component sets of each found size.
    ``found``: a circuit already discovered on this task (used as is at its own settings)."""
    ev = evaluator or Evaluator(model, task, means_from=base.means_from)
    every = ev.shape.components()
    rng = random.Random(seed)
    points = []
    for i, t in enumerate(thresholds):
        if on_progress:
            on_progress(i, len(thresholds), f"threshold {t:g}")
        cfg = DiscoveryConfig(**{**base.to_json(), "threshold": t, "sweeps": base.sweeps})
        c = found if found is not None and found.cfg == cfg else discover_nodes(model, task, cfg, ev)
        rand = [ev.performance(rng.sample(every, len(c.nodes))) for _ in range(n_random)]
        points.append(CurvePoint(t, len(c.nodes), len(c.heads()), c.performance, rand))
    return points
