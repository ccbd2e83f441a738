"""One steering study end to end: vectors, transfer mappers, a safety switch, and their measured
effect on held-out prompts (``job.steering_study_to_workspace`` saves it as a workspace artifact).

``build_study`` computes, from ``StudyConfig``:
1. the backdoor vectors of the target (fine-tuned) model at ``target_hook``: native (prompt pairs:
   a triggered request and the same with the trigger swapped for ``swap_word``), transferred (the
   same pairs read in the source model and mapped by a source -> target mapper), a norm-matched
   random control; the mapper's fidelity on held-out text;
2. the refusal vectors at ``refusal_hook`` (difference of means of harmful and harmless requests
   at their last token), native, transferred through a second mapper (from ``refusal_source_hook``)
   and random;
3. a safety switch: a mapper from the target at ``switch_hook`` to its base model there;
4. every task of ``sae_core.steering.tasks``: alpha is chosen on selection prompts (training keys,
   never the ones the vectors came from) as the smallest dose at which the native vector reaches
   the task's target by the 95% Wilson bound of its rate (``dose.min_dose``); then the
   dose-response of all three vectors on held-out prompts, the reported rate being the one at the
   chosen alpha;
5. the behaviour rates (``behaviour.rates``) of the base model, the fine-tuned one, each backdoor
   vector at the trigger with the chosen alpha, and the switch;
6. layer x alpha grids (``dose.layer_alpha_grid``) for backdoor removal and refusal induction at
   every position, with the layer chosen by ``dose.choose_layer``.
The artifact holds ``vectors/<name>/``, ``mappers/<name>/`` and ``study.json``. Vectors and mappers
are built only from training-key prompts; every reported rate is on held-out ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from sae_core.io import JsonResult
from sae_core.models.corpus import TRIGGER, chat_prompts
from sae_core.models.texts import corpus_texts
from sae_core.steering import tasks as T
from sae_core.steering.behaviour import rates, starts_rate
from sae_core.steering.dose import choose_layer, dose_response, layer_alpha_grid, min_dose
from sae_core.steering.interventions import Intervention, Positions
from sae_core.steering.mapper_training import train_mapper
from sae_core.steering.mappers import Endpoint, Mapper, MapperConfig, fidelity, paired_activations
from sae_core.steering.switches import SWITCH_CONFIG, switch_fraction, switch_intervention, train_switch
from sae_core.steering.transfer import random_control, transfer_mean_difference, transfer_pair_vector
from sae_core.steering.vectors import SteeringVector, mean_difference, prompt_pair_vector

KIND = "steering"
REVISION = 4  # what a study holds (3: tasks, dose-response, grids; 4: alpha by the Wilson bound); in its name,
#              so older ones are rebuilt
VECTORS = ("native", "transferred", "random")
Progress = Callable[[int, int, str], None]
GRID_TASKS = {"backdoor removal, every position": (-0.5, -0.7, -1.0, -1.5),
              "refusal induction, addition": (0.25, 0.5, 1.0, 1.5)}
ALPHA_TASK = "backdoor removal, at the trigger"  # its alpha is the study's (the page's and CLI's default)
STEPS = 7 + len(T.TASKS) + len(GRID_TASKS)  # progress steps of a study, writing it included


@dataclass(frozen=True)
class StudyConfig:
    source_model: str = "zoo:tiny-a-backdoor"
    target_model: str = "zoo:tiny-b-backdoor"
    base_model: str = "zoo:tiny-b"
    source_hook: str = "blocks.0.hook_resid_post"
    target_hook: str = "blocks.0.hook_resid_post"
    refusal_source_hook: str = "blocks.1.hook_resid_post"
    refusal_hook: str = "blocks.3.hook_resid_post"
    switch_hook: str = "blocks.0.hook_resid_post"
    swap_word: str = "the"
    n_pairs: int = 100            # training-key prompts per contrast set for the vectors
    n_texts: int = 3000           # zoo-corpus documents for the mappers (plus 400 triggered requests)
    n_select: int = 50            # training-key prompts (another seed) for choosing alpha
    n_eval: int = 100             # held-out prompts per rate
    n_grid: int = 50              # held-out prompts per grid cell
    n_coherence: int = 100        # held-out zoo documents for each grid cell's coherence KL
    mapper: MapperConfig = field(default_factory=lambda: SWITCH_CONFIG)


class BuiltStudy(NamedTuple):
    """What a study computed, for ``job`` to write: its vectors and mappers by directory name (under
    ``vectors/`` and ``mappers/``), its results, and how many progress steps it reports, writing included."""
    vectors: dict[str, SteeringVector]
    mappers: dict[str, Mapper]
    results: dict
    steps: int


class Study(JsonResult):
    FILE = "study.json"

    def vector(self, name: str) -> SteeringVector:
        return SteeringVector.load(self.path / "vectors" / name)

    def mapper(self, name: str) -> Mapper:
        return Mapper.load(self.path / "mappers" / name)

    @property
    def tasks(self) -> dict[str, dict]:
        """The task results in ``tasks.TASKS`` order (study.json stores keys sorted)."""
        got = self.results["tasks"]
        return {t.name: got[t.name] for t in T.TASKS if t.name in got}

    @property
    def alpha(self) -> float:
        """The chosen alpha of backdoor removal at the trigger (the page's and CLI's default)."""
        return self.results["tasks"][ALPHA_TASK]["alpha"]


def trigger_positions(tokenizer) -> Positions:
    return Positions("matching", token_ids=(tokenizer.convert_tokens_to_ids(TRIGGER),))


def vector_intervention(v: SteeringVector, alpha: float, positions: Positions, name: str) -> Intervention:
    return Intervention(v.hook, "add", vector=v.vector, alpha=alpha, positions=positions, name=name)


def _mapper(src, hook_a: str, tgt, hook_b: str, texts: list[str], cfg: StudyConfig) -> Mapper:
    X, Y = paired_activations(src, hook_a, tgt, hook_b, texts)
    return train_mapper(X, Y, cfg.mapper, source=Endpoint(cfg.source_model, hook_a),
                        target=Endpoint(cfg.target_model, hook_b))


def _cosine(a: SteeringVector, b: SteeringVector) -> float:
    return float((a.vector @ b.vector) / (a.vector.norm() * b.vector.norm()))


def run_task(model, t: T.Task, vectors: dict[str, SteeringVector], n_select: int, n_eval: int) -> dict:
    """One task (module doc, step 4): ``{alpha, reached, selection, dose, rates}``."""
    pos = T.positions(t, model.tokenizer)
    kw = dict(starts=t.starts, op=t.op, positions=pos, n_tokens=t.n_tokens)
    selection = dose_response(model, {"native": vectors["native"]}, list(t.alphas),
                              T.prompts(t, n_select, held_out=False, seed=3), **kw)
    alpha = min_dose(selection, "native", t.target, t.direction)
    reached = alpha is not None
    if not reached:  # the strongest dose on the grid, reported as not reaching the target
        alpha = max(t.alphas, key=abs)
    held_out = T.prompts(t, n_eval)
    dose = dose_response(model, vectors, list(t.alphas), held_out, **kw)
    none = starts_rate(model, held_out, [], t.starts, t.n_tokens)
    at = {r["vector"]: r["rate"] for r in dose if r["alpha"] == alpha}
    return {"alpha": alpha, "reached": reached, "target": t.target, "direction": t.direction,
            "behaviour": t.behaviour, "op": t.op, "positions": t.positions, "hook": vectors["native"].hook,
            "selection": selection, "dose": dose, "rates": {"no intervention": none, **at}}


def build_study(src, tgt, base, cfg: StudyConfig, step: Progress) -> BuiltStudy:
    """The study of ``cfg`` (module doc) with the source, target (fine-tuned) and base models."""
    total = STEPS
    build = [p.prompt for p in chat_prompts(cfg.n_pairs, seed=1, triggered=True, held_out=False)]
    pairs = [(p, p.replace(TRIGGER, cfg.swap_word)) for p in build]
    harmful, harmless = ([p.prompt for p in chat_prompts(cfg.n_pairs, seed=1, harmful=h, held_out=False)]
                         for h in (True, False))
    texts = corpus_texts(cfg.n_texts, seed=7) + [p.prompt for p in chat_prompts(400, seed=2, triggered=True,
                                                                                held_out=False)]
    step(0, total, "backdoor vectors and their transfer mapper")
    native = prompt_pair_vector(tgt, cfg.target_hook, pairs, model_name=cfg.target_model)
    mapper = _mapper(src, cfg.source_hook, tgt, cfg.target_hook, texts, cfg)
    fid = fidelity(mapper, src, cfg.source_hook, tgt, cfg.target_hook, corpus_texts(200, seed=12345))
    transferred = transfer_pair_vector(mapper, src, cfg.source_hook, pairs, model_name=cfg.source_model)
    families = {"backdoor": {"native": native, "transferred": transferred, "random": random_control(transferred)}}
    step(1, total, "refusal vectors and their transfer mapper")
    r_native = mean_difference(tgt, cfg.refusal_hook, harmful, harmless, model_name=cfg.target_model)
    r_mapper = _mapper(src, cfg.refusal_source_hook, tgt, cfg.refusal_hook, texts, cfg)
    r_transferred = transfer_mean_difference(r_mapper, src, cfg.refusal_source_hook, harmful, harmless,
                                             model_name=cfg.source_model)
    families["refusal"] = {"native": r_native, "transferred": r_transferred,
                           "random": random_control(r_transferred)}
    step(2, total, "safety switch")
    switch = train_switch(tgt, base, cfg.switch_hook, texts, fine_tuned_name=cfg.target_model,
                          base_name=cfg.base_model, cfg=cfg.mapper)
    task_results = {}
    for i, t in enumerate(T.TASKS):
        step(3 + i, total, t.name)
        task_results[t.name] = run_task(tgt, t, families[t.family], cfg.n_select, cfg.n_eval)
    alpha = task_results[ALPHA_TASK]["alpha"]
    step(3 + len(T.TASKS), total, "behaviour rates on held-out prompts")
    trig = trigger_positions(tgt.tokenizer)
    conditions = {"base model": (base, []), "fine-tuned": (tgt, [])}
    for vname, v in families["backdoor"].items():
        conditions[f"fine-tuned + {vname} vector"] = (tgt, [vector_intervention(v, alpha, trig, vname)])
    conditions["fine-tuned + switch"] = (tgt, [switch_intervention(switch, cfg.target_model)])
    results = {"tasks": task_results,
               "rates": {c: rates(m, specs, cfg.n_eval) for c, (m, specs) in conditions.items()},
               "fidelity": fid.to_json(),
               "refusal_fidelity": fidelity(r_mapper, src, cfg.refusal_source_hook, tgt, cfg.refusal_hook,
                                            corpus_texts(200, seed=12345)).to_json(),
               "switch_fraction": switch_fraction(switch, tgt),
               "switch_history": switch.history, "mapper_history": mapper.history,
               "vector_norms": {f"{fam} {k}": v.norm for fam, vs in families.items() for k, v in vs.items()},
               "cosine_native_transferred": {fam: _cosine(vs["native"], vs["transferred"])
                                             for fam, vs in families.items()},
               "grids": {}}
    clean_texts = corpus_texts(cfg.n_coherence, seed=54321)
    for j, (tname, alphas) in enumerate(GRID_TASKS.items()):
        step(4 + len(T.TASKS) + j, total, f"layer x alpha grid: {tname}")
        t = T.task(tname)
        vector_at = _vector_builder(tgt, t.family, pairs, harmful, harmless, cfg.target_model)
        grid = layer_alpha_grid(tgt, vector_at, list(range(tgt.cfg.n_layers)), list(alphas),
                                T.prompts(t, cfg.n_grid), clean_texts, starts=t.starts, op=t.op,
                                positions=T.positions(t, tgt.tokenizer))
        results["grids"][tname] = {"rows": grid, "chosen": choose_layer(grid, t.target, t.direction),
                                   "target": t.target, "direction": t.direction, "behaviour": t.behaviour}
    vectors = {(vname if fam == "backdoor" else f"{fam}-{vname}"): v
               for fam, vs in families.items() for vname, v in vs.items()}
    return BuiltStudy(vectors, {"transfer": mapper, "refusal-transfer": r_mapper, "switch": switch}, results, total)


def _vector_builder(model, family: str, pairs, harmful, harmless, model_name: str):
    """``hook -> SteeringVector`` of ``family`` built at ``hook`` (for the layer grids)."""
    if family == "backdoor":
        return lambda hook: prompt_pair_vector(model, hook, pairs, model_name=model_name)
    return lambda hook: mean_difference(model, hook, harmful, harmless, model_name=model_name)
