"""One circuits study end to end, saved as a workspace artifact the page and CLI read.

``circuits_to_workspace(ws, cfg)``, for each task of ``cfg.tasks`` on ``cfg.model``:
1. prompts (``make_task``, the paper's filter; ``mode="paper"``: the authors' prompts, ``TaskConfig.
   paper``) and the full model's metrics;
2. node discovery (``discover_nodes``), single-component ablation scores, and the size vs
   performance curve over ``curve_thresholds`` against random circuits of the same sizes;
3. edges (``method``). ``eap``, ``eap-ig`` and ``patching`` (exact path patching on the full model,
   one edge at a time) score every edge of the model; the circuit's edges are then those between
   its nodes whose |score| reaches ``edge_threshold`` of the model's logit difference, pruned to
   paths from input to logits (this study's rule, not the authors'); for attribution, the
   ``validate_top`` edges with the largest |score| are also patched exactly (the validation
   scatter and its Spearman rho). ``paper``: the authors' computation (``edge_pruning.py``, their
   ``run_edge_ablation.py``): path patching inside the mean-ablated circuit, an edge kept while the
   LD ratio stays under ``ratio_threshold``;
4. head analyses: OV next / copy scores (successor ranking; ``mode="paper"``: the authors' reading,
   ``heads.ov_scores_paper``) and attention summaries;
then the cross-task comparison: node and edge IoU, node membership, and every circuit on every task.
``results["mode"]`` and ``results["rules"]`` record which computation made each part
(``circuits.method.method_rows`` words them).

Writes ``circuits.json`` (config and results) and ``graphs/<task>.json`` in EAP-IG's layout.
Returns at once when the artifact exists (the name is a hash of the configuration).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

from sae_core.circuits.ablation import Evaluator
from sae_core.circuits.compare import cross_performance, iou_matrix, membership, shared_by_all
from sae_core.circuits.discovery import DiscoveryConfig, NodeCircuit, ablation_scores, discover_nodes, size_curve
from sae_core.circuits.edge_pruning import PAPER_RATIO, QUIRKS, paper_edges
from sae_core.circuits.edges import BASELINES, EdgeScorer
from sae_core.circuits.graph import CircuitGraph, Edge, prune
from sae_core.circuits.heads import attention_summary, ov_scores, ov_scores_paper
from sae_core.circuits.tasks import TEMPLATES, CircuitError, TaskConfig, make_task
from sae_core.io import JsonResult, atomic_write_json
from sae_core.models.corpus import SEQUENCE_TASKS
from sae_core.workspace import Artifact, Workspace, artifact_name

KIND = "circuits"
REVISION = 2   # 2: mode, the authors' edges (method "paper") and results["rules"]
METHODS = ("eap", "eap-ig", "patching", "paper")
MODES = ("default", "paper")
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class CircuitStudyConfig:
    model: str = field(default="zoo:tiny-b", metadata={"help": "Model (zoo:NAME, directory or hub name)."})
    mode: str = field(default="default", metadata={
        "help": "default | paper: the authors' prompts and OV scores (edges: method)."})
    tasks: tuple[str, ...] = field(default=("digits", "number_words", "months"), metadata={
        "help": "Comma-separated tasks: digits, number_words, months, days, letters."})
    template: str = field(default="sentence", metadata={"help": "Prompt template: sentence | paper | bare | comma."})
    n_prompts: int = field(default=64, metadata={
        "help": "Candidate prompts per task (the filter keeps the right ones)."})
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    method: str = field(default="eap", metadata={
        "help": "Edges: eap | eap-ig | patching (exact, full model) | paper (the authors', in the circuit)."})
    # what an edge's sender is replaced by
    baseline: str = field(default="mean", metadata={
        "help": "Edge senders replaced by their mean (as node ablation) or the corrupt run."})
    ig_steps: int = field(default=5, metadata={"help": "Integration steps of eap-ig."})
    edge_threshold: float = field(default=0.01, metadata={
        "help": "Circuit edges: |score| at least this fraction of the model's logit difference."})
    ratio_threshold: float = field(default=PAPER_RATIO, metadata={
        "help": "Method paper: keep an edge whose patching leaves LD under this fraction of the model's."})
    validate_top: int = field(default=20, metadata={"help": "Top attribution edges checked by exact path patching."})
    curve_thresholds: tuple[float, ...] = field(default=(10.0, 20.0, 40.0), metadata={
        "help": "Thresholds of the size vs performance curve."})
    n_random: int = field(default=8, metadata={"help": "Random circuits per size on the curve."})
    seed: int = field(default=0, metadata={"help": "Prompt and random-circuit seed."})

    def __post_init__(self):
        if not self.tasks or (bad := [t for t in self.tasks if t not in SEQUENCE_TASKS]):
            raise CircuitError(f"tasks {list(self.tasks)}: give one or more of {', '.join(SEQUENCE_TASKS)}")
        if self.template not in TEMPLATES:
            raise CircuitError(f"template {self.template!r}: choose one of {', '.join(TEMPLATES)}")
        if self.mode not in MODES:
            raise CircuitError(f"mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if not 0 < self.ratio_threshold < 1:
            raise CircuitError(f"ratio_threshold={self.ratio_threshold}: a fraction of the model's LD, between 0 and 1 "
                               "(0.8, the authors')")
        if self.method not in METHODS:
            raise CircuitError(f"method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.baseline not in BASELINES:
            raise CircuitError(f"baseline {self.baseline!r}: choose one of {', '.join(BASELINES)}")
        if not 0 <= self.edge_threshold < 1:
            raise CircuitError(f"edge_threshold={self.edge_threshold}: a fraction of the logit difference, 0..1")
        if self.validate_top < 0 or self.n_random < 0:
            raise CircuitError("validate_top and n_random count edges and circuits: give 0 or more")

    def to_json(self) -> dict:
        return {**asdict(self), "tasks": list(self.tasks), "curve_thresholds": list(self.curve_thresholds),
                "discovery": self.discovery.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> "CircuitStudyConfig":
        disc = d["discovery"]
        return cls(**{**d, "tasks": tuple(d["tasks"]), "curve_thresholds": tuple(d["curve_thresholds"]),
                      "discovery": DiscoveryConfig(**{**disc, "sweeps": tuple(disc["sweeps"])})})


class CircuitStudy(JsonResult):
    FILE = "circuits.json"

    @property
    def tasks(self) -> list[str]:
        """The tasks in the configuration's order (the comparison matrices' rows and columns; the
        stored JSON sorts ``results["tasks"]`` by name)."""
        return list(self.config["tasks"])

    def components(self, task: str) -> list[str]:
        """Every head and MLP of the model (each has an ablation score), in layer order."""
        from sae_core.circuits.ablation import parse_node

        def order(name: str) -> tuple[int, int]:
            layer, head = parse_node(name)
            return layer, (10**6 if head is None else head)
        return sorted(self.results["tasks"][task]["ablation"], key=order)

    def graph(self, task: str) -> CircuitGraph:
        if task not in self.results["tasks"]:
            raise CircuitError(f"no circuit for {task!r} in this study; it has {', '.join(self.results['tasks'])}")
        return CircuitGraph.load(self.path / "graphs" / f"{task}.json")

    def circuit(self, task: str) -> NodeCircuit:
        return NodeCircuit.from_json(self.results["tasks"][task]["circuit"])


def _edges(model, task, found: NodeCircuit, cfg: CircuitStudyConfig, step) -> tuple[CircuitGraph, dict | None]:
    """The task's graph with the circuit's edges marked, and the validation against exact patching."""
    meta = {"nodes": found.nodes, "performance": found.performance}
    if cfg.method == "paper":  # the authors' rule decides the edges: no threshold, no path pruning
        g = paper_edges(model, task, found.nodes, cfg.ratio_threshold,
                        on_progress=lambda d, t, _: step(f"edges ({cfg.method})", 0.75 + 0.2 * d / t))
        return CircuitGraph(g.cfg, g.scores, g.in_graph, g.node_scores, {**g.meta, **meta}), None
    scorer = EdgeScorer(model, task, baseline=cfg.baseline)
    graph = scorer.patch_edges() if cfg.method == "patching" else \
        scorer.attribute(ig_steps=cfg.ig_steps if cfg.method == "eap-ig" else 0)
    graph = CircuitGraph(graph.cfg, graph.scores, circuit_edges(graph, found.nodes, cfg.edge_threshold),
                         graph.node_scores, {**graph.meta, **meta})
    step("validation against exact patching", 0.85)
    return graph, _validation(scorer, graph, cfg.validate_top)


def rules(cfg: CircuitStudyConfig, verbs: list[str]) -> dict:
    """What computed each part of a study, for ``results["rules"]`` (``method.method_rows``)."""
    paper = cfg.mode == "paper"
    return {"mode": cfg.mode, "prompts": "paper" if paper else "default", "verbs": verbs, "template": cfg.template,
            "edges": cfg.method, "baseline": cfg.baseline, "edge_threshold": cfg.edge_threshold,
            "ratio_threshold": cfg.ratio_threshold, "quirks": list(QUIRKS) if cfg.method == "paper" else [],
            "ov": "paper" if paper else "default", "means_from": cfg.discovery.means_from,
            "reference": cfg.discovery.reference, "threshold": cfg.discovery.threshold}


def circuit_edges(graph: CircuitGraph, nodes: list[str], fraction: float) -> frozenset[str]:
    """Edges between ``nodes`` (and input / logits) whose |score| reaches ``fraction`` of |LD|,
    pruned to paths from input to logits."""
    allowed = set(nodes) | {"input", "logits"}
    cut = fraction * abs(graph.meta.get("ld_clean", 1.0))
    keep = {n for n, s in graph.scores.items() if abs(s) >= cut and _ends(n) <= allowed}
    return frozenset(prune(keep))


def _ends(name: str) -> set[str]:
    e = Edge.parse(name)
    return {e.sender, e.receiver}


def _validation(scorer: EdgeScorer, graph: CircuitGraph, top: int) -> dict | None:
    if top < 2 or graph.meta["method"] == "path patching":
        return None
    # imported here: scipy.stats takes ~1 s to import, which every `sae-core` command (even --help)
    # paid through the CLI's import of this package's configuration
    from scipy.stats import spearmanr

    names = sorted(graph.scores, key=lambda n: -abs(graph.scores[n]))[:top]
    exact = scorer.patch_edges([Edge.parse(n) for n in names]).scores
    rho = spearmanr([graph.scores[n] for n in names], [exact[n] for n in names])[0]
    return {"edges": names, "attribution": [graph.scores[n] for n in names], "exact": [exact[n] for n in names],
            "spearman": float(rho)}


def _one_task(model, task_name: str, cfg: CircuitStudyConfig, step: Callable[[str, float], None]):
    task = make_task(model, TaskConfig(task=task_name, template=cfg.template, n_prompts=cfg.n_prompts, seed=cfg.seed,
                                       paper=cfg.mode == "paper"))
    ev = Evaluator(model, task, means_from=cfg.discovery.means_from)
    step("pruning", 0.0)
    found = discover_nodes(model, task, cfg.discovery, ev, on_progress=lambda d, t, _: step("pruning", 0.4 * d / t))
    step("single-component ablation", 0.4)
    single = ablation_scores(ev)
    step("size vs performance curve", 0.5)
    curve = size_curve(model, task, list(cfg.curve_thresholds), cfg.discovery, cfg.n_random, cfg.seed, ev,
                       on_progress=lambda d, t, _: step("size vs performance curve", 0.5 + 0.25 * d / t), found=found)
    step(f"edges ({cfg.method})", 0.75)
    graph, validation = _edges(model, task, found, cfg, step)
    step("head analyses", 0.95)
    ov = ov_scores_paper(model, task) if cfg.mode == "paper" else ov_scores(model, task_name)
    result = {
        "stats": task.stats.to_json(), "n_prompts": len(task), "examples": task.texts[:3],
        "corrupt_examples": task.corrupt_texts[:3], "ld_model": float(ev.ld_model.mean()),
        "circuit": found.to_json(), "ablation": single, "curve": [p.to_json() for p in curve],
        "validation": validation, "edges_in_graph": sorted(graph.in_graph), "verbs": task.verbs,
        "subjects": task.subjects,
        "ov": [s.to_json() for s in ov],
        "attention": [s.to_json() for s in attention_summary(model, task)],
    }
    return result, graph, ev


def circuits_to_workspace(ws: Workspace, cfg: CircuitStudyConfig = CircuitStudyConfig(), *,
                          load: Callable[[str], object] | None = None,
                          on_progress: Progress | None = None) -> Artifact:
    """Build (or find) the circuits study of ``cfg`` (module doc)."""
    name = artifact_name(cfg.model, None, {"circuits": cfg.to_json(), "revision": REVISION})
    if (existing := ws.get(KIND, name)) is not None:
        return existing
    if load is None:
        from sae_core.models.loading import load_model as load
    report = on_progress or (lambda done, total, text: None)
    total = len(cfg.tasks) + 1
    model = load(cfg.model)
    tasks, graphs, evaluators = {}, {}, {}
    for i, t in enumerate(cfg.tasks):
        tasks[t], graphs[t], evaluators[t] = _one_task(
            model, t, cfg, lambda text, f, i=i, t=t: report(i + f, total, f"{t}: {text}"))
    report(len(cfg.tasks), total, "cross-task comparison")
    nodes = {t: tasks[t]["circuit"]["nodes"] for t in cfg.tasks}
    edges = {t: tasks[t]["edges_in_graph"] for t in cfg.tasks}
    results = {
        "model": cfg.model, "mode": cfg.mode, "rules": rules(cfg, tasks[cfg.tasks[0]]["verbs"]), "tasks": tasks,
        "compare": {"tasks": list(cfg.tasks), "node_iou": iou_matrix(nodes), "edge_iou": iou_matrix(edges),
                    "membership": membership(nodes), "shared_nodes": shared_by_all(nodes),
                    "cross_performance": cross_performance(nodes, evaluators)},
    }
    meta = {"tasks": list(cfg.tasks), "method": cfg.method, "mode": cfg.mode,
            "performance": {t: tasks[t]["circuit"]["metrics"]["performance"] for t in cfg.tasks},
            "sizes": {t: len(nodes[t]) for t in cfg.tasks}}
    with ws.create(KIND, name, model=cfg.model, meta=meta, overwrite=True) as d:
        (d / "graphs").mkdir()
        for t, g in graphs.items():
            g.save(d / "graphs" / f"{t}.json")
        atomic_write_json(d / CircuitStudy.FILE, {"config": cfg.to_json(), "results": results})
    report(total, total, "done")
    return ws.get(KIND, name)
