"""The authors' edges (``edge_pruning.py``, their ``run_edge_ablation.py``): on the planted model the
successor head's edge to the logits is kept and the copy head's dropped; on zoo B every kind of
edge matches the authors' steps written out with the bridge's own hooks, their two quirks included."""
import pytest
import torch

from sae_core.circuits.edge_pruning import PAPER_RATIO, paper_edges
from sae_core.circuits.tasks import CircuitError, TaskConfig, make_task
from tests.circuits.planted_circuit import successor_model


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    model = successor_model(tmp_path_factory.mktemp("planted"))
    return model, make_task(model, TaskConfig(task="digits", template="bare", n_prompts=32, paper=True))


def _ratios(g) -> dict[str, float]:
    return {n: 1 + s / g.meta["ld_clean"] for n, s in g.scores.items()}


def test_planted_successor_edge_kept_copy_edge_dropped(planted):
    model, task = planted
    g = paper_edges(model, task, ["a1.h0", "a1.h1"])
    r = _ratios(g)
    assert set(g.scores) == {"a1.h0->logits", "a1.h1->logits"}       # only edges between the circuit's nodes
    assert g.in_graph == {"a1.h0->logits"} and r["a1.h0->logits"] < 0  # corrupted successor: the wrong next digit
    assert r["a1.h1->logits"] > 1            # the copy head promoted the distractor: corrupting it helps
    assert g.meta["circuit_ratio"] == pytest.approx(1.0) and g.meta["method"] == "paper"  # the rest has no weights
    # every component: the zero-weight senders change nothing (ratio 1), and the MLP quirk keeps m1 -> logits,
    # whose patch carries layer 1's attention (the successor head) with it
    every = paper_edges(model, task, ["a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1"])
    r = _ratios(every)
    assert every.in_graph == {"a1.h0->logits", "m1->logits"}
    assert all(r[n] == pytest.approx(1.0, abs=1e-5) for n in r if n.startswith(("a0.", "m0")))
    assert r["m1->logits"] < PAPER_RATIO and every.meta["circuit_ratio"] == pytest.approx(1.0)
    with pytest.raises(CircuitError, match="ratio=1.5"):
        paper_edges(model, task, ["a1.h0"], ratio=1.5)


NODES = ["a0.h1", "m0", "a1.h7", "m1", "a2.h1"]


def _authors_steps(model, task):
    """``edge -> LD ratio`` by the authors' steps with plain hooks (independent of sae_core.circuits)."""
    n_l, n_h = model.cfg.n_layers, model.cfg.n_heads
    heads = {(int(n[1]), int(n[4])) for n in NODES if n.startswith("a")}
    mlps = {int(n[1]) for n in NODES if n.startswith("m")}
    z = [f"blocks.{l}.attn.hook_z" for l in range(n_l)]
    m = [f"blocks.{l}.hook_mlp_out" for l in range(n_l)]
    store = {}

    def run(tokens, hooks):
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            return model(tokens)[:, -1]

    def save(name, key):
        return name, lambda a, hook: store.__setitem__(key, a.clone())

    def put(value, head=None):
        def fn(a, hook):
            a = a.clone()
            if head is None:
                return value.clone()
            a[:, :, head] = value[:, :, head]
            return a
        return fn

    run(task.corrupt_BT, [save(z[l], ("mean", z[l])) for l in range(n_l)])
    zmean = {l: store[("mean", z[l])].mean(0) for l in range(n_l)}

    def ablate_z(l):
        def fn(a, hook):
            a = a.clone()
            for h in range(n_h):
                if (l, h) not in heads:
                    a[:, :, h] = zmean[l][:, h]
            return a
        return fn
    heads_off = [(z[l], ablate_z(l)) for l in range(n_l)]
    run(task.corrupt_BT, heads_off + [save(m[l], ("mean", m[l])) for l in range(n_l)])  # add_ablation_hook_MLP_head
    ablate = heads_off + [(m[l], (lambda v: lambda a, hook: v.expand_as(a).clone())(store[("mean", m[l])].mean(0)))
                          for l in range(n_l) if l not in mlps]
    for which, toks in (("orig", task.clean_BT), ("new", task.corrupt_BT)):
        run(toks, ablate + [save(x, (which, x)) for x in z + m])
    freeze = lambda l, h: [(z[k], put(store[("orig", z[k])])) for k in range(n_l)] + [(z[l], put(store[("new", z[l])], h))]
    full = run(task.clean_BT, [])
    rows = torch.arange(len(task))
    ld = lambda lg: (lg[rows, task.answer_B] - lg[rows, task.distractor_B]).mean()
    return lambda edge: float(ld(_edge_logits(edge, run, ablate, freeze, put, save, store, z, m, mlps, task)) / ld(full))


def _edge_logits(edge, run, ablate, freeze, put, save, store, z, m, mlps, task):
    sender, receiver = edge.split("->")
    if receiver == "logits":
        if sender.startswith("a"):
            logits = run(task.clean_BT, ablate + freeze(int(sender[1]), int(sender[4])))
        else:   # quirk 2: every circuit MLP's layer up to the sender, attention and MLP
            upto = [l for l in sorted(mlps) if l <= int(sender[1])]
            logits = run(task.clean_BT, ablate + [(x, put(store[("new", x)])) for l in upto for x in (z[l], m[l])])
    else:
        if receiver.startswith("a"):
            layer, head, chan = int(receiver[1]), int(receiver[4]), receiver[6]
            target, second = f"blocks.{layer}.attn.hook_{chan}", head
        else:
            target, second = m[int(receiver[1])], None
        if sender.startswith("a"):
            send = freeze(int(sender[1]), int(sender[4]))
        elif receiver.startswith("a"):   # quirk 1: the sender MLP's layer's hook_z
            send = [(z[int(sender[1])], put(store[("new", z[int(sender[1])])]))]
        else:
            send = [(m[int(sender[1])], put(store[("new", m[int(sender[1])])]))]
        run(task.clean_BT, ablate + send + [save(target, "got")])
        logits = run(task.clean_BT, ablate + [(target, put(store["got"], second))])
    return logits


def test_every_kind_of_edge_matches_the_authors_steps_on_zoo_b(tiny_b):
    task = make_task(tiny_b, TaskConfig(task="digits", n_prompts=12, paper=True))
    g = paper_edges(tiny_b, task, NODES, batch=8)   # two batches: the sums over batches are the means
    r = _ratios(g)
    # 3 heads, 2 MLPs: head -> later head (q, k, v), MLP -> later head, head / MLP -> later MLP, all -> logits
    assert len(g.scores) == 3 * (1 + 2) + 3 * (1 + 2) + 1 + 1 + 5
    reference = _authors_steps(tiny_b, task)
    for edge in ["a0.h1->a1.h7<q>", "a1.h7->a2.h1<v>", "m0->a2.h1<k>", "a0.h1->m1", "m0->m1", "a1.h7->logits",
                 "m1->logits"]:
        assert r[edge] == pytest.approx(reference(edge), abs=1e-4), edge
    assert g.in_graph == {n for n, x in r.items() if x < PAPER_RATIO and x != 0}
