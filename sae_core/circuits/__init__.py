"""Circuits for sequence continuation (arXiv 2311.04131): tasks and metrics, mean-ablation node
discovery, edge scores (path patching, EAP, EAP-IG; the authors' path patching in the circuit,
edge_pruning.py) on EAP-IG's graph schema, head analyses,
cross-task comparison, SAE features inside a circuit, and the study job (issue #14)."""
from sae_core.circuits.ablation import Evaluator, ModelShape
from sae_core.circuits.discovery import DiscoveryConfig, NodeCircuit, ablation_scores, discover_nodes, size_curve
from sae_core.circuits.edges import EdgeScorer
from sae_core.circuits.graph import CircuitGraph, Edge, GraphConfig, all_edges
from sae_core.circuits.job import CircuitStudy, CircuitStudyConfig, circuits_to_workspace
from sae_core.circuits.metrics import TaskMetrics, evaluate, kl_to_model, logit_diff, performance
from sae_core.circuits.tasks import CircuitError, TaskConfig, TaskSet, make_task

__all__ = ["CircuitError", "CircuitGraph", "CircuitStudy", "CircuitStudyConfig", "DiscoveryConfig", "Edge",
           "EdgeScorer", "Evaluator", "GraphConfig", "ModelShape", "NodeCircuit", "TaskConfig", "TaskMetrics",
           "TaskSet", "ablation_scores", "all_edges", "circuits_to_workspace", "discover_nodes", "evaluate",
           "kl_to_model", "logit_diff", "make_task", "performance", "size_curve"]
