"""One steering study end to end, as a workspace artifact: vectors, a transfer mapper, a safety
switch, and their measured effect on held-out prompts.

``steering_study_to_workspace`` builds, from ``StudyConfig``:
1. the native backdoor vector of the target (fine-tuned) model: prompt pairs (a triggered request,
   and the same with the trigger swapped for ``swap_word``) at ``target_hook``;
2. a mapper from the source model at ``source_hook`` to the target at ``target_hook`` (paired
   activations on zoo-corpus text plus triggered requests), its fidelity on held-out text;
3. the transferred vector (the same pairs read in the source, mapped) and a norm-matched random
   control;
4. a safety switch: a mapper from the target at ``switch_hook`` to its base model there;
5. the rates (``behaviour.rates``) of the target with nothing, each vector added with ``alpha``
   at the trigger positions, and the switch on; and of the base model;
6. the layer sweep (``behaviour.layer_sweep``): which layers' native vectors remove the backdoor.
The artifact holds ``vectors/<name>/``, ``mappers/<name>/`` and ``study.json``. Vectors and mappers
are built only from training-key prompts; every rate is on held-out ones.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from sae_core.io import atomic_write_json, read_json
from sae_core.models.corpus import TRIGGER, chat_prompts
from sae_core.models.texts import corpus_texts
from sae_core.steering.behaviour import layer_sweep, rates
from sae_core.steering.interventions import Intervention, Positions
from sae_core.steering.mappers import Endpoint, Mapper, MapperConfig, fidelity, paired_activations, train_mapper
from sae_core.steering.switches import SWITCH_CONFIG, switch_fraction, switch_intervention, train_switch
from sae_core.steering.transfer import random_control, transfer_pair_vector
from sae_core.steering.vectors import SteeringVector, prompt_pair_vector
from sae_core.workspace import Artifact, Workspace, artifact_name

KIND = "steering"
REVISION = 2  # what a study holds (2: the layer sweep); in its name, so older studies are rebuilt
VECTORS = ("native", "transferred", "random")
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class StudyConfig:
    source_model: str = "zoo:tiny-a-backdoor"
    target_model: str = "zoo:tiny-b-backdoor"
    base_model: str = "zoo:tiny-b"
    source_hook: str = "blocks.0.hook_resid_post"
    target_hook: str = "blocks.0.hook_resid_post"
    switch_hook: str = "blocks.0.hook_resid_post"
    swap_word: str = "the"
    n_pairs: int = 100            # training-key triggered requests for the vectors
    n_texts: int = 3000           # zoo-corpus documents for the mappers (plus 400 triggered requests)
    n_eval: int = 100             # held-out prompts per rate
    alpha: float = -1.0           # h + alpha v at the trigger: -1 takes the trigger's shift away
    mapper: MapperConfig = field(default_factory=lambda: SWITCH_CONFIG)


@dataclass
class Study:
    path: Path
    config: dict
    results: dict

    def vector(self, name: str) -> SteeringVector:
        return SteeringVector.load(self.path / "vectors" / name)

    def mapper(self, name: str) -> Mapper:
        return Mapper.load(self.path / "mappers" / name)

    @classmethod
    def open(cls, path: Path) -> "Study":
        d = read_json(Path(path) / "study.json")
        return cls(Path(path), d["config"], d["results"])


def trigger_positions(tokenizer) -> Positions:
    return Positions("matching", token_ids=(tokenizer.convert_tokens_to_ids(TRIGGER),))


def vector_intervention(v: SteeringVector, alpha: float, positions: Positions, name: str) -> Intervention:
    return Intervention(v.hook, "add", vector=v.vector, alpha=alpha, positions=positions, name=name)


def steering_study_to_workspace(ws: Workspace, cfg: StudyConfig = StudyConfig(), *,
                                load: Callable[[str], object] | None = None,
                                on_progress: Progress | None = None) -> Artifact:
    """Build (or find) the study of ``cfg`` (module doc). ``load(name)``: how models are loaded
    (default ``load_model``; the app passes its cache)."""
    name = artifact_name(cfg.target_model, cfg.target_hook, {"study": asdict(cfg), "revision": REVISION})
    if (existing := ws.get(KIND, name)) is not None:
        return existing
    if load is None:
        from sae_core.models.loading import load_model as load
    step = on_progress or (lambda done, total, text: None)
    total = 6
    src, tgt, base = load(cfg.source_model), load(cfg.target_model), load(cfg.base_model)
    build = [p.prompt for p in chat_prompts(cfg.n_pairs, seed=1, triggered=True, held_out=False)]
    pairs = [(p, p.replace(TRIGGER, cfg.swap_word)) for p in build]
    texts = corpus_texts(cfg.n_texts, seed=7) + [p.prompt for p in chat_prompts(400, seed=2, triggered=True,
                                                                                held_out=False)]
    step(0, total, "native vector")
    native = prompt_pair_vector(tgt, cfg.target_hook, pairs, model_name=cfg.target_model)
    step(1, total, "transfer mapper")
    X, Y = paired_activations(src, cfg.source_hook, tgt, cfg.target_hook, texts)
    mapper = train_mapper(X, Y, cfg.mapper, source=Endpoint(cfg.source_model, cfg.source_hook),
                          target=Endpoint(cfg.target_model, cfg.target_hook))
    fid = fidelity(mapper, src, cfg.source_hook, tgt, cfg.target_hook, corpus_texts(200, seed=12345))
    transferred = transfer_pair_vector(mapper, src, cfg.source_hook, pairs, model_name=cfg.source_model)
    vectors = {"native": native, "transferred": transferred, "random": random_control(transferred)}
    step(2, total, "safety switch")
    switch = train_switch(tgt, base, cfg.switch_hook, texts, fine_tuned_name=cfg.target_model,
                          base_name=cfg.base_model, cfg=cfg.mapper)
    step(3, total, "rates on held-out prompts")
    trig = trigger_positions(tgt.tokenizer)
    conditions = {"base model": (base, []), "fine-tuned": (tgt, [])}
    for vname, v in vectors.items():
        conditions[f"fine-tuned + {vname} vector"] = (tgt, [vector_intervention(v, cfg.alpha, trig, vname)])
    conditions["fine-tuned + switch"] = (tgt, [switch_intervention(switch, cfg.target_model)])
    results = {"rates": {c: rates(m, specs, cfg.n_eval) for c, (m, specs) in conditions.items()},
               "fidelity": fid.to_json(), "switch_fraction": switch_fraction(switch, tgt),
               "switch_history": switch.history, "mapper_history": mapper.history,
               "vector_norms": {k: v.norm for k, v in vectors.items()},
               "cosine_native_transferred": float(
                   (native.vector @ transferred.vector) / (native.vector.norm() * transferred.vector.norm()))}
    step(4, total, "layer sweep")
    results["layer_sweep"] = layer_sweep(tgt, pairs, cfg.alpha, tgt.tokenizer.convert_tokens_to_ids(TRIGGER),
                                         n=min(50, cfg.n_eval))
    step(5, total, "writing")
    meta = {"source_model": cfg.source_model, "base_model": cfg.base_model,
            "hate_rate_native": results["rates"]["fine-tuned + native vector"]["hate_rate"],
            "hate_rate_switch": results["rates"]["fine-tuned + switch"]["hate_rate"]}
    with ws.create(KIND, name, model=cfg.target_model, hook=cfg.target_hook, meta=meta, overwrite=True) as d:
        for vname, v in vectors.items():
            v.save(d / "vectors" / vname)
        mapper.save(d / "mappers" / "transfer")
        switch.save(d / "mappers" / "switch")
        cfg_json = {**asdict(cfg), "mapper": asdict(cfg.mapper)}
        atomic_write_json(d / "study.json", {"config": cfg_json, "results": results})
    step(total, total, "done")
    return ws.get(KIND, name)
