"""Edge scores and the graph schema: EAP agrees with exact patching; EAP is the small-step limit of
path patching (so the layer-norm pull-back of q/k/v gradients is right); EAP-IG's JSON round trip."""
import json

import pytest
import torch
from scipy.stats import spearmanr

from sae_core.circuits.ablation import Evaluator
from sae_core.circuits.discovery import ablation_scores
from sae_core.circuits.edges import EdgeScorer
from sae_core.circuits.graph import CircuitGraph, Edge, GraphConfig, all_edges, prune
from sae_core.circuits.tasks import CircuitError, TaskConfig, make_task
from tests.circuits.planted_circuit import random_sequential_model, successor_model


def test_edge_counts_match_eap_ig_construction():
    par, seq = GraphConfig(4, 8, True, 256), GraphConfig(2, 3, False, 16)
    # parallel: layer l's 3H+1 receivers read input + l (H + 1) senders; logits read all 1 + L (H + 1)
    assert len(all_edges(par)) == sum((3 * 8 + 1) * (1 + l * 9) for l in range(4)) + 1 + 4 * 9
    # sequential: the MLP also reads its own layer's heads
    assert len(all_edges(seq)) == sum(3 * 3 * (1 + l * 4) + (1 + l * 4 + 3) for l in range(2)) + 1 + 2 * 4
    assert Edge("a0.h1", "m0") not in all_edges(par) and Edge("a0.h1", "m0") in all_edges(seq)
    assert Edge.parse("a0.h1->a2.h3<q>") == Edge("a0.h1", "a2.h3", "q")
    for bad in ["a0.h1->a2.h3", "m1->m2<q>", "logits->m0", "a0->m1"]:
        with pytest.raises(CircuitError, match="not an edge name"):
            Edge.parse(bad)


def test_prune_keeps_only_paths_from_input_to_logits():
    kept = prune({"input->a0.h0<q>", "a0.h0->logits", "a0.h1->a1.h0<v>", "input->m0", "m1->logits"})
    assert kept == {"input->a0.h0<q>", "a0.h0->logits"}   # a0.h1 has no input, m0 no way out, m1 no input


def test_eap_ig_json_round_trip_and_foreign_files(tmp_path):
    cfg = GraphConfig(2, 2, True, 8)
    scores = {e.name: (i % 7 - 3) / 10 for i, e in enumerate(all_edges(cfg))}
    g = CircuitGraph(cfg, scores, node_scores={"a0.h1": 0.5}, meta={"task": "digits"}).with_threshold(0.3)
    path = g.save(tmp_path / "graph.json")
    data = json.loads(path.read_text())
    assert set(data) >= {"cfg", "nodes", "edges"} and data["cfg"]["parallel_attn_mlp"] is True
    first = "input->a0.h0<q>"
    assert data["edges"][first] == {"score": scores[first], "in_graph": first in g.in_graph}
    assert len(data["edges"]) == len(scores) and 0 < len(g.in_graph) < len(scores)
    assert data["nodes"]["logits"]["in_graph"] and data["nodes"]["a0.h1"]["score"] == 0.5
    back = CircuitGraph.load(path)
    assert back == g and back.in_graph and back.nodes() == g.nodes()
    # older EAP-IG files: nodes as plain booleans
    data["nodes"] = {n: v["in_graph"] for n, v in data["nodes"].items()}
    assert CircuitGraph.from_eap_json(data).in_graph == g.in_graph
    with pytest.raises(CircuitError, match="needs 'cfg'"):
        CircuitGraph.from_eap_json({"edges": {}})
    data["cfg"]["n_layers"] = 1
    with pytest.raises(CircuitError, match="made for another model"):
        CircuitGraph.from_eap_json(data)
    (tmp_path / "junk.json").write_text("not json")
    with pytest.raises(CircuitError, match="cannot read"):
        CircuitGraph.load(tmp_path / "junk.json")


@pytest.fixture(scope="module")
def scorer_b(tiny_b):
    task = make_task(tiny_b, TaskConfig(task="digits"))
    return task, EdgeScorer(tiny_b, task)


def test_node_attribution_agrees_with_exact_patching_on_zoo_b(tiny_b, scorer_b):
    task, sc = scorer_b
    eap = sc.attribute()
    exact = sc.patch_nodes()
    names = sorted(exact)
    rho = spearmanr([eap.node_scores[n] for n in names], [exact[n] for n in names])[0]
    assert rho >= 0.8
    perf = ablation_scores(Evaluator(tiny_b, task))   # the same mean ablation, as a % of the model's LD
    for n in names:
        assert 100 * (sc.ld_clean + exact[n]) / sc.ld_clean == pytest.approx(perf[n], abs=1e-3)


def test_eap_is_the_small_step_limit_of_path_patching(tiny_b, scorer_b):
    task, sc = scorer_b
    eap = sc.attribute()
    edges = [Edge.parse(n) for n in ["a1.h7->logits", "m0->a1.h7<v>", "m0->a2.h1<q>", "a0.h4->a1.h7<k>",
                                     "input->m0", "a2.h1->m3"]]
    full = dict(sc.delta)
    eps = 1e-2
    sc.delta = {s: eps * d for s, d in full.items()}
    try:
        small = sc.patch_edges(edges)
    finally:
        sc.delta = full
    for e in edges:
        assert small.scores[e.name] / eps == pytest.approx(eap.scores[e.name], rel=0.1, abs=2e-3), e.name


def test_path_patching_agrees_with_attribution_on_top_edges(scorer_b):
    task, sc = scorer_b
    eap = sc.attribute()
    top = sorted(eap.scores, key=lambda n: -abs(eap.scores[n]))[:30]
    exact = sc.patch_edges([Edge.parse(n) for n in top])
    assert spearmanr([eap.scores[n] for n in top], [exact.scores[n] for n in top])[0] >= 0.6
    assert exact.in_graph <= set(top)
    assert all((sc.ld_clean + exact.scores[n]) / sc.ld_clean < 0.8 for n in exact.in_graph)
    ig = sc.attribute(ig_steps=3)
    assert ig.meta["method"] == "EAP-IG" and ig.scores != eap.scores
    with pytest.raises(CircuitError, match="ig_steps"):
        sc.attribute(ig_steps=1)


def test_planted_successor_edges_rank_first(tmp_path):
    model = successor_model(tmp_path / "planted")
    task = make_task(model, TaskConfig(task="digits", template="bare", starts=tuple(range(8)), n_prompts=32))
    g = EdgeScorer(model, task).attribute()
    top = sorted(g.scores, key=lambda n: -abs(g.scores[n]))[:4]
    assert set(top) == {"input->a1.h0<v>", "a1.h0->logits", "input->a1.h1<v>", "a1.h1->logits"}
    # baseline along the successor head's path hurts the task; along the copy head's it helps
    assert {n for n, s in g.scores.items() if s < -0.5} == {"input->a1.h0<v>", "a1.h0->logits"}
    assert g.scores["a1.h1->logits"] > 0.5
    assert max(abs(s) for n, s in g.scores.items() if n.startswith(("a0.", "m0", "m1"))) < 1e-5
    assert torch.isfinite(torch.tensor(list(g.scores.values()))).all()


def test_sequential_residual_edges_are_the_small_step_limit_too(tmp_path):
    """GPT-2's layout: a layer's MLP reads that layer's heads; no filter (a random model)."""
    from sae_core.circuits.tasks import FilterStats, TaskSet
    from sae_core.models.loading import to_tokens

    model = random_sequential_model(tmp_path / "seq")
    clean = to_tokens(model, ["3 4 5 6", "1 2 3 4", "5 6 7 8"])
    corrupt = to_tokens(model, ["9 1 4 2", "7 7 3 1", "2 8 6 5"])
    ids = lambda ws: torch.tensor([model.tokenizer.encode(" " + w, add_special_tokens=False)[0] for w in ws])
    task = TaskSet(TaskConfig(task="digits", template="bare"), clean, corrupt, ids("759"), ids("648"), [], [],
                   FilterStats(3, 3, 0, 0))
    sc = EdgeScorer(model, task)
    assert not sc.cfg.parallel_attn_mlp and Edge("a0.h1", "m0") in all_edges(sc.cfg)
    eap = sc.attribute()
    edges = [Edge.parse(n) for n in ["a0.h1->m0", "a1.h0->m1", "input->a1.h0<k>", "m0->a1.h1<q>", "a0.h0->a1.h1<v>",
                                     "a1.h0->logits"]]
    full = dict(sc.delta)
    eps = 1e-3
    sc.delta = {s: eps * d for s, d in full.items()}
    small = sc.patch_edges(edges)
    for e in edges:
        assert small.scores[e.name] / eps == pytest.approx(eap.scores[e.name], rel=0.05, abs=1e-3), e.name
    assert max(abs(eap.scores[e.name]) for e in edges) > 1e-2     # not a vacuous 0 = 0
