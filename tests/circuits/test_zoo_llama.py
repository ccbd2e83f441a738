"""Issue #31's circuit targets on the trained Llama-family zoo model: a digits circuit that keeps at
least 80% of the model's performance with at most half of its heads, and edge attribution that ranks
the top 50 edges as exact path patching does (Spearman rho >= 0.8). The digits task runs on the
members its byte-level tokenizer holds as one token (" 1" to " 8")."""
import pytest
from scipy.stats import spearmanr

from sae_core.circuits.ablation import Evaluator
from sae_core.circuits.discovery import discover_nodes
from sae_core.circuits.edges import EdgeScorer
from sae_core.circuits.graph import Edge
from sae_core.circuits.tasks import TaskConfig, make_task


@pytest.fixture(scope="module")
def digits_l(tiny_l):
    task = make_task(tiny_l, TaskConfig(task="digits"))
    return task, Evaluator(tiny_l, task)


@pytest.mark.slow  # prunes the 36 components of zoo:tiny-l, then patches 50 edges exactly
def test_digits_circuit_keeps_performance_with_few_heads(tiny_l, digits_l):
    task, ev = digits_l
    assert len(task) >= 48 and task.members == [str(i) for i in range(1, 9)]
    found = discover_nodes(tiny_l, task, evaluator=ev)
    n_heads = tiny_l.cfg.n_layers * tiny_l.cfg.n_heads
    assert found.performance >= 80 and 0 < len(found.heads()) <= n_heads // 2


@pytest.mark.slow
def test_eap_ig_ranks_the_top_edges_as_exact_patching(tiny_l, digits_l):
    task, _ = digits_l
    scorer = EdgeScorer(tiny_l, task, baseline="mean")
    graph = scorer.attribute(ig_steps=5)
    top = sorted(graph.scores, key=lambda n: -abs(graph.scores[n]))[:50]
    exact = scorer.patch_edges([Edge.parse(n) for n in top]).scores
    rho = spearmanr([graph.scores[n] for n in top], [exact[n] for n in top])[0]
    assert rho >= 0.8
    assert any("<k>" in n or "<v>" in n for n in top)   # edges into the grouped key/value heads are among them
