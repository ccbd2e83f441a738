"""Safety switches: a mapper from a fine-tuned model's layer to its base model's same layer.

Switched on, the fine-tuned model's activations at that hook are replaced by the mapped ones at
every position (``switch_intervention``), so what the fine-tune added there (a backdoor) is
mapped away while the rest of the model runs as fine-tuned (arXiv 2503.04429, section 5). The
switch's size is its mapper's parameters as a fraction of the model's.
"""
from __future__ import annotations

from typing import Callable

from sae_core.steering.interventions import Intervention
from sae_core.steering.mapper_training import train_mapper
from sae_core.steering.mappers import Endpoint, Mapper, MapperConfig, TextActivations

SWITCH_CONFIG = MapperConfig(kind="autoencoder", lr=1e-3, epochs=10)


def train_switch(fine_tuned, base, hook: str, texts: list[str], *, fine_tuned_name: str, base_name: str,
                 cfg: MapperConfig = SWITCH_CONFIG,
                 on_progress: Callable[[int, int, str], None] | None = None,
                 acts: TextActivations | None = None) -> Mapper:
    """An autoencoder from ``fine_tuned`` at ``hook`` to ``base`` at the same hook (``acts``: the
    activations on ``texts`` already read, to share with other mappers)."""
    acts = acts if acts is not None else TextActivations(texts)
    if acts.texts is not texts:
        raise ValueError("train_switch: acts were read on other texts than the ones given")
    X, Y = acts.pair(fine_tuned, hook, base, hook)
    return train_mapper(X, Y, cfg, source=Endpoint(fine_tuned_name, hook), target=Endpoint(base_name, hook),
                        on_progress=on_progress)


def switch_intervention(mapper: Mapper, model_name: str, name: str = "switch") -> Intervention:
    """The switch as an intervention on ``model_name`` (checked against the mapper's source)."""
    mapper.check_applies(model_name, mapper.source.hook)
    return Intervention(mapper.source.hook, "replace", mapper=mapper, name=name)


def switch_fraction(mapper: Mapper, model) -> float:
    return mapper.n_params / sum(p.numel() for p in model.parameters())
