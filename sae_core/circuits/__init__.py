"""Circuits for sequence continuation (arXiv 2311.04131): tasks and metrics so far; node and edge
discovery, head analyses and cross-task comparison build on them (issue #14)."""
from sae_core.circuits.metrics import TaskMetrics, evaluate, kl_to_model, logit_diff, performance
from sae_core.circuits.tasks import CircuitError, TaskConfig, TaskSet, make_task

__all__ = ["CircuitError", "TaskConfig", "TaskMetrics", "TaskSet", "evaluate", "kl_to_model", "logit_diff",
           "make_task", "performance"]
