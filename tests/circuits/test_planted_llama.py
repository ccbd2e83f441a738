"""The planted successor circuit in the Llama layout (``planted_llama``): node discovery finds the
successor head alone, and edge attribution and exact patching tell apart the two query heads that
read one shared value (issue #31)."""
import pytest
import torch

from sae_core.circuits.ablation import Evaluator
from sae_core.circuits.discovery import ablation_scores, discover_nodes
from sae_core.circuits.edges import EdgeScorer
from sae_core.circuits.graph import Edge
from sae_core.circuits.tasks import TaskConfig, make_task
from tests.circuits.planted_llama import COPY, SUCCESSOR, successor_llama

S, C = f"a{SUCCESSOR[0]}.h{SUCCESSOR[1]}", f"a{COPY[0]}.h{COPY[1]}"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    model = successor_llama(tmp_path_factory.mktemp("planted_llama"))
    task = make_task(model, TaskConfig(task="digits", template="bare", starts=tuple(range(8)), n_prompts=32))
    return model, task


def test_the_planted_successor_head_is_found_alone(planted):
    model, task = planted
    assert model.cfg.n_key_value_heads == 2 and model.cfg.normalization_type == "RMS"
    assert task.stats.kept == task.stats.generated        # the planted model does the task
    ev = Evaluator(model, task)
    found = discover_nodes(model, task, evaluator=ev)
    assert found.nodes == [S] and found.performance > 100   # the copy head, ablated, no longer helps the distractor
    scores = ablation_scores(ev)
    assert min(scores, key=scores.get) == S and scores[S] < 0 and scores[C] > 100
    assert all(abs(scores[n] - 100) < 1e-3 for n in scores if n not in (S, C))   # zero weights: no effect


def test_edges_into_a_shared_value_are_told_apart_per_query_head(planted):
    model, task = planted
    sc = EdgeScorer(model, task)
    g = sc.attribute()
    top = sorted(g.scores, key=lambda n: -abs(g.scores[n]))[:4]
    assert set(top) == {f"input->{S}<v>", f"{S}->logits", f"input->{C}<v>", f"{C}->logits"}
    # one shared value head, two query heads: the baseline along the successor's path hurts, the copy's helps
    assert g.scores[f"input->{S}<v>"] < -0.5 and g.scores[f"input->{C}<v>"] > 0.5
    exact = sc.patch_edges([Edge.parse(n) for n in top])
    assert all((exact.scores[n] > 0) == (g.scores[n] > 0) and abs(exact.scores[n]) > 0.5 for n in top)
    assert max(abs(s) for n, s in g.scores.items() if n.startswith(("a0.", "m0", "m1"))) < 1e-5
    assert torch.isfinite(torch.tensor(list(g.scores.values()))).all()
