"""One graph schema for every edge method, and EAP-IG's JSON layout for interchange.

Nodes: ``input``, heads ``a{L}.h{H}``, MLPs ``m{L}``, ``logits``. Edges run from a sender (input,
a head, an MLP) to a receiver input: a later head's query, key or value (``a0.h1->a2.h3<q>``), an
MLP (``a0.h1->m2``) or the logits. In a parallel-residual model (GPT-NeoX, Pythia) a layer's heads
do not feed its own MLP; otherwise (GPT-2, Llama, Qwen2, Gemma 2) they do. Under grouped-query
attention every query head keeps its own q, k and v receivers, a shared key or value read through
that head alone (``head_io``), so the graph is the same with GQA or without. The edge set and its
order are those of EAP-IG's ``Graph.from_model``, so its files load here and ours there:
``{"cfg": {n_layers, n_heads, parallel_attn_mlp, d_model}, "nodes": {name: {"in_graph": b,
"score": s}}, "edges": {name: {"score": s, "in_graph": b}}}``. (Older EAP-IG files give nodes as
plain booleans: read too.)
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from sae_core.circuits.tasks import CircuitError

EDGE_RE = re.compile(r"^(input|a\d+\.h\d+|m\d+)->(a\d+\.h\d+|m\d+|logits)(?:<([qkv])>)?$")
CHANNELS = ("q", "k", "v")


@dataclass(frozen=True)
class GraphConfig:
    n_layers: int
    n_heads: int
    parallel_attn_mlp: bool
    d_model: int

    @classmethod
    def of(cls, model) -> "GraphConfig":
        from sae_core.circuits.ablation import ModelShape

        shape = ModelShape.of(model)
        return cls(shape.n_layers, shape.n_heads, shape.parallel, int(model.cfg.d_model))

    def to_json(self) -> dict:
        return {"n_layers": self.n_layers, "n_heads": self.n_heads, "parallel_attn_mlp": self.parallel_attn_mlp,
                "d_model": self.d_model}


@dataclass(frozen=True)
class Edge:
    sender: str
    receiver: str
    channel: str | None = None  # q, k or v for a head receiver

    @property
    def name(self) -> str:
        return f"{self.sender}->{self.receiver}" + (f"<{self.channel}>" if self.channel else "")

    @classmethod
    def parse(cls, name: str) -> "Edge":
        hit = EDGE_RE.match(name)
        if not hit or (hit[2].startswith("a")) != (hit[3] is not None):
            raise CircuitError(f"{name!r} is not an edge name: sender->receiver, with <q>, <k> or <v> after a head "
                               "receiver (input->a0.h1<q>, a0.h1->m2, m3->logits)")
        return cls(hit[1], hit[2], hit[3])


def senders(cfg: GraphConfig) -> list[str]:
    return ["input"] + [n for layer in range(cfg.n_layers)
                        for n in [f"a{layer}.h{h}" for h in range(cfg.n_heads)] + [f"m{layer}"]]


def all_edges(cfg: GraphConfig) -> list[Edge]:
    """Every edge of the model's graph, in EAP-IG's order."""
    out: list[Edge] = []
    stream = ["input"]
    for layer in range(cfg.n_layers):
        heads = [f"a{layer}.h{h}" for h in range(cfg.n_heads)]
        mlp = f"m{layer}"
        for s in stream:
            out += [Edge(s, a, c) for a in heads for c in CHANNELS]
            if cfg.parallel_attn_mlp:
                out.append(Edge(s, mlp))
        if not cfg.parallel_attn_mlp:
            out += [Edge(s, mlp) for s in stream + heads]
        stream += heads + [mlp]
    return out + [Edge(s, "logits") for s in stream]


@dataclass(frozen=True)
class CircuitGraph:
    """Scores for every edge (and optionally node) of a model's graph, and which are in the circuit."""
    cfg: GraphConfig
    scores: dict[str, float]                          # edge name -> score (every edge of the graph)
    in_graph: frozenset[str] = frozenset()            # edge names in the circuit
    node_scores: dict[str, float] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)          # task, method, metric, ... (ours; EAP-IG ignores it)

    def __post_init__(self):
        known = {e.name for e in all_edges(self.cfg)}
        if unknown := [n for n in list(self.scores) + list(self.in_graph) if n not in known]:
            raise CircuitError(f"{len(unknown)} edges are not in a {self.cfg.n_layers}-layer, {self.cfg.n_heads}-head "
                               f"graph (parallel_attn_mlp={self.cfg.parallel_attn_mlp}), e.g. {unknown[0]!r}; the "
                               "graph was made for another model")
        if bad := [n for n, s in self.scores.items() if not math.isfinite(s)]:
            raise CircuitError(f"edge scores must be finite numbers; {bad[0]!r} has {self.scores[bad[0]]}")

    def nodes(self) -> list[str]:
        """Nodes touched by an edge in the circuit (input and logits included when reached)."""
        touched = {x for e in map(Edge.parse, self.in_graph) for x in (e.sender, e.receiver)}
        return [n for n in senders(self.cfg) + ["logits"] if n in touched]

    def with_threshold(self, threshold: float, absolute: bool = True) -> "CircuitGraph":
        """The edges whose (absolute) score reaches ``threshold``, pruned to those on a path from input
        to logits."""
        keep = {n for n, s in self.scores.items() if (abs(s) if absolute else s) >= threshold}
        return replace(self, in_graph=frozenset(prune(keep)))

    def top_n(self, n: int, absolute: bool = True) -> "CircuitGraph":
        ranked = sorted(self.scores, key=lambda e: -(abs(self.scores[e]) if absolute else self.scores[e]))
        return replace(self, in_graph=frozenset(prune(set(ranked[:n]))))

    def to_eap_json(self) -> dict:
        in_nodes = set(self.nodes())
        nodes = {n: {"in_graph": n in in_nodes or n == "logits", **({"score": self.node_scores[n]}
                                                                    if n in self.node_scores else {})}
                 for n in senders(self.cfg) + ["logits"]}
        edges = {e.name: {"score": float(self.scores.get(e.name, 0.0)), "in_graph": e.name in self.in_graph}
                 for e in all_edges(self.cfg)}
        return {"cfg": self.cfg.to_json(), "nodes": nodes, "edges": edges, "sae_studio": self.meta}

    @classmethod
    def from_eap_json(cls, data: dict) -> "CircuitGraph":
        if not isinstance(data, dict) or (missing := [k for k in ("cfg", "nodes", "edges") if k not in data]):
            raise CircuitError("not an EAP-IG graph: the JSON needs 'cfg', 'nodes' and 'edges' at the top"
                               + (f" (missing {missing})" if isinstance(data, dict) else ""))
        try:
            cfg = GraphConfig(int(data["cfg"]["n_layers"]), int(data["cfg"]["n_heads"]),
                              bool(data["cfg"].get("parallel_attn_mlp", False)), int(data["cfg"].get("d_model", 0)))
            for name in data["edges"]:
                Edge.parse(name)
            scores = {n: float(v["score"]) for n, v in data["edges"].items()}
            in_graph = frozenset(n for n, v in data["edges"].items() if v.get("in_graph"))
            node_scores = {n: float(v["score"]) for n, v in data["nodes"].items()
                           if isinstance(v, dict) and v.get("score") is not None and not math.isnan(v["score"])}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CircuitError(f"not an EAP-IG graph: {type(e).__name__} {e} while reading cfg/edges (each edge "
                               "needs a 'score' and an 'in_graph')") from None
        return cls(cfg, scores, in_graph, node_scores, dict(data.get("sae_studio") or {}))

    def save(self, path: str | Path) -> Path:
        from sae_core.io import atomic_write_json

        atomic_write_json(Path(path), self.to_eap_json())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "CircuitGraph":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CircuitError(f"cannot read a circuit graph from {path}: {e}") from None
        return cls.from_eap_json(data)


def prune(edges: set[str]) -> set[str]:
    """Drop edges until every one lies on a path from input to logits (EAP-IG's ``prune``)."""
    parsed = {n: Edge.parse(n) for n in edges}
    while True:
        has_in = {"input"} | {e.receiver for e in parsed.values()}
        has_out = {"logits"} | {e.sender for e in parsed.values()}
        alive = {n: e for n, e in parsed.items() if e.sender in has_in and e.receiver in has_out}
        if len(alive) == len(parsed):
            return set(alive)
        parsed = alive
