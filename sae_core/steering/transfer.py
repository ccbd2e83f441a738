"""Steering vectors carried from model A to model B through a mapper (arXiv 2503.04429, 4.2).

The vector is built in A from the same contrast sets as A's own, with every activation mapped
into B's space first: v_B = mean map(h+_A) - mean map(h-_A) (for prompt pairs, the mean over
pairs of map(h_a) - map(h_b) over the swapped span). The result is a ``SteeringVector`` of B at the
mapper's target hook. ``random_control`` is the norm-matched random direction the paper compares
against; ``source_layer`` the source model's layer at the same relative depth as a target layer.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from sae_core.steering.mappers import Mapper
from sae_core.steering.vectors import SteeringVector, mean_difference, prompt_pair_vector


def _as_target(v: SteeringVector, mapper: Mapper) -> SteeringVector:
    return replace(v, model=mapper.target.model or v.model, hook=mapper.target.hook or v.hook,
                   extra={**v.extra, "transferred_from": {"model": v.model, "hook": v.hook},
                          "mapper": mapper.meta() | {"history": None}})


def transfer_pair_vector(mapper: Mapper, model_a, hook_a: str, pairs: list[tuple[str, str]], *,
                         reduce: str = "mean", model_name: str = "") -> SteeringVector:
    """The prompt-pair vector of ``pairs`` read in A at ``hook_a`` and mapped into B (each token of
    the differing span mapped, then reduced by ``reduce``: see ``prompt_pair_vector``)."""
    mapper.check_applies(model_name or mapper.source.model, hook_a)
    with torch.no_grad():
        v = prompt_pair_vector(model_a, hook_a, pairs, reduce=reduce,
                               model_name=model_name or mapper.source.model, transform=mapper)
    return _as_target(v, mapper)


def transfer_mean_difference(mapper: Mapper, model_a, hook_a: str, positive: list[str],
                             negative: list[str], *, position: str = "last", token_id: int | None = None,
                             model_name: str = "") -> SteeringVector:
    """The difference of mapped means of ``positive`` and ``negative`` read in A at ``hook_a``."""
    mapper.check_applies(model_name or mapper.source.model, hook_a)
    with torch.no_grad():
        v = mean_difference(model_a, hook_a, positive, negative, position=position, token_id=token_id,
                            model_name=model_name or mapper.source.model, transform=mapper)
    return _as_target(v, mapper)


def random_control(v: SteeringVector, seed: int = 0) -> SteeringVector:
    """A random direction with ``v``'s norm, at ``v``'s model and hook."""
    r = torch.randn(v.vector.shape, generator=torch.Generator().manual_seed(seed))
    return replace(v, vector=r / r.norm() * v.vector.norm(), method="random_control",
                   extra={**v.extra, "control_for": v.method, "seed": seed})


def source_layer(layer: int, n_target: int, n_source: int) -> int:
    """The source layer at the same relative depth as the target's ``layer``."""
    if n_target == 1:
        return n_source - 1
    return round(layer * (n_source - 1) / (n_target - 1))
