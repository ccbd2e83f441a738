"""Steering: interventions on activations (vectors, mappers between models, safety switches)."""
from sae_core.steering.interventions import Intervention, InterventionError, Positions, Record, intervene

__all__ = ["Intervention", "InterventionError", "Positions", "Record", "intervene"]
