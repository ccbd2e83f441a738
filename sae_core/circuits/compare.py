"""Circuits of several tasks side by side: node and edge IoU, which tasks use each node (the union
graph's colours), and each task's circuit evaluated on every task (the paper's cross-task table)."""
from __future__ import annotations

from typing import Callable, Iterable

from sae_core.circuits.ablation import Evaluator


def iou(a: Iterable[str], b: Iterable[str]) -> float:
    """|A & B| / |A | B| (1.0 for two empty sets)."""
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def iou_matrix(sets: dict[str, Iterable[str]]) -> list[list[float]]:
    names = list(sets)
    return [[iou(sets[r], sets[c]) for c in names] for r in names]


def membership(sets: dict[str, Iterable[str]]) -> dict[str, list[str]]:
    """Node -> the tasks whose circuit holds it, for every node of any circuit."""
    out: dict[str, list[str]] = {}
    for task, nodes in sets.items():
        for n in nodes:
            out.setdefault(n, []).append(task)
    return out


def shared_by_all(sets: dict[str, Iterable[str]]) -> list[str]:
    groups = [set(v) for v in sets.values()]
    return sorted(set.intersection(*groups)) if groups else []


def cross_performance(circuits: dict[str, list[str]], evaluators: dict[str, Evaluator],
                      on_progress: Callable[[int, int, str], None] | None = None) -> list[list[float]]:
    """``[i][j]``: performance (%) of task i's circuit on task j's prompts, ablated with task j's
    means (rows: circuits, columns: tasks evaluated on)."""
    names = list(circuits)
    total = len(names) * len(evaluators)
    rows = []
    for i, c in enumerate(names):
        row = []
        for j, t in enumerate(evaluators):
            if on_progress:
                on_progress(i * len(evaluators) + j, total, f"{c} circuit on {t}")
            row.append(evaluators[t].performance(circuits[c]))
        rows.append(row)
    return rows
