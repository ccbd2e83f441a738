"""Sparse autoencoders: architectures over one small interface, trainer, metrics, SAELens-format io."""
from sae_core.sae.base import SAE, ForwardOutput
from sae_core.sae.config import SAEConfig, SAEConfigError
from sae_core.sae.registry import ARCHITECTURES, create_sae

__all__ = ["SAE", "ForwardOutput", "SAEConfig", "SAEConfigError", "ARCHITECTURES", "create_sae"]
