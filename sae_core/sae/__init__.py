"""Sparse autoencoders: architectures over one small interface, kernels, metrics, splicing into a
model, SAELens-format io. The trainer is ``sae_core.training``."""
from sae_core.sae.base import SAE
from sae_core.sae.output import ForwardOutput
from sae_core.sae.config import ARCHITECTURES, SAEConfig, SAEConfigError
from sae_core.sae.registry import create_sae

__all__ = ["SAE", "ForwardOutput", "SAEConfig", "SAEConfigError", "ARCHITECTURES", "create_sae"]
