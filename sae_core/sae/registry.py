"""Architecture name -> class. A new architecture is one new module plus one line here."""
from __future__ import annotations


def _classes() -> dict[str, type]:
    from sae_core.sae.batchtopk import BatchTopKSAE
    from sae_core.sae.jumprelu import JumpReLUSAE
    from sae_core.sae.relu import ReLUSAE
    from sae_core.sae.sampled import SampledSAE
    from sae_core.sae.topk import TopKSAE

    return {"relu": ReLUSAE, "topk": TopKSAE, "batchtopk": BatchTopKSAE, "jumprelu": JumpReLUSAE,
            "sampled": SampledSAE}


ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu", "sampled")


def create_sae(cfg):
    """A freshly initialised SAE of ``cfg.arch``."""
    return _classes()[cfg.arch](cfg)
