"""Architecture name -> class. A new architecture is one new module, its name in
``config.ARCHITECTURES`` and one line here."""
from __future__ import annotations

from sae_core.sae.base import SAE
from sae_core.sae.batchtopk import BatchTopKSAE
from sae_core.sae.config import ARCHITECTURES, SAEConfig
from sae_core.sae.jumprelu import JumpReLUSAE
from sae_core.sae.relu import ReLUSAE
from sae_core.sae.sampled import SampledSAE
from sae_core.sae.topk import TopKSAE

CLASSES: dict[str, type[SAE]] = {"relu": ReLUSAE, "topk": TopKSAE, "batchtopk": BatchTopKSAE,
                                 "jumprelu": JumpReLUSAE, "sampled": SampledSAE}
assert tuple(CLASSES) == ARCHITECTURES, "config.ARCHITECTURES and the registry disagree"


def create_sae(cfg: SAEConfig) -> SAE:
    """A freshly initialised SAE of ``cfg.arch``."""
    return CLASSES[cfg.arch](cfg)
