"""Every circuits analysis on the Llama, Qwen2, Gemma 2 and GPT-2 layouts, and zoo A's GPT-NeoX
(issue #31), through the same code path, each checked against a reference written with the
bridge's own hooks (no W_Q, no norm, no soft-cap by hand):

- node ablation: performance against mean ablation written with plain ``hook_z`` / ``hook_mlp_out`` hooks;
- exact edge patching: against path patching by the freezing recipe (every other component's
  output frozen to its clean value, so the receiver reads clean + delta; a head receiver's other
  two channels frozen, its output carried over at ``hook_z``);
- EAP: the small-step limit of exact patching (central differences in alpha), and the sum of a
  sender's edges equals ``delta . dM/d(where it enters the residual)`` (nothing missed or counted
  twice: grouped-query k / v split, sequential attention -> MLP edges, RMSNorm pull-back);
- EAP-IG: the same sum at every interpolation step, and completeness against patching the input;
- the authors' edges (``paper_edges``), OV outputs, the logit lens and attention summaries.

Random layouts run in float64 with their weights scaled up (x4: attention patterns far from
uniform, so edges into k matter) and Gemma's soft-caps lowered (attention 2, final 3: in tanh's
bend), so that a missed cap, norm or GQA share shows in the numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from sae_core.circuits.ablation import Evaluator, parse_node
from sae_core.circuits.discovery import DiscoveryConfig, ablation_scores, discover_nodes
from sae_core.circuits.edge_pruning import paper_edges
from sae_core.circuits.edges import EdgeScorer
from sae_core.circuits.graph import Edge, GraphConfig, all_edges
from sae_core.circuits.head_io import HeadLayout, split_kv_grads
from sae_core.circuits.heads import attention_summary, ov_outputs, ov_scores
from sae_core.circuits.logit_lens import logit_lens
from sae_core.circuits.tasks import FilterStats, TaskConfig, TaskSet
from sae_core.models.hooks import capture, gradients, patching
from sae_core.models.loading import load_model, to_tokens

LAYOUTS = ["random:llama-3.2-1b-tiny", "random:qwen2.5-0.5b-tiny", "random:gemma-2-2b-tiny", "random:gpt2-tiny",
           "zoo:tiny-a"]
CLEAN = ["3 4 5 6", "1 2 3 4", "5 6 7 8", "2 3 4 5", "0 1 2 3", "6 7 8 9"]
CORRUPT = ["9 1 4 2", "7 7 3 1", "2 8 6 5", "0 9 9 1", "4 4 8 2", "1 5 0 3"]
RESID_PRE = "blocks.0.hook_resid_pre"


@dataclass
class Case:
    name: str
    model: object
    task: TaskSet
    scorer: EdgeScorer
    eap: object


def _layout_model(name: str):
    model = load_model(name, device="cpu")
    model.to(torch.float64)
    if name.startswith("random:"):
        with torch.no_grad():
            for p in model.original_model.parameters():
                if p.ndim >= 2:
                    p.mul_(4.0)
    if "gemma" in name:
        model.cfg.output_logits_soft_cap = model.original_model.config.final_logit_softcapping = 3.0
        for block in model.blocks:
            block.attn._original_component.attn_logit_softcapping = 2.0
    return model


def _task(model) -> TaskSet:
    """Bare digit prompts; the answer and the distractor are the digits the model likes most and
    least (random weights know no task), so that every prompt's logit difference is positive."""
    digits = torch.tensor([model.tokenizer.encode(f" {k}", add_special_tokens=False)[0] for k in range(10)])
    clean, corrupt = to_tokens(model, CLEAN), to_tokens(model, CORRUPT)
    with torch.no_grad():
        logits = model(clean)[:, -1][:, digits]
    return TaskSet(TaskConfig(task="digits", template="bare"), clean, corrupt, digits[logits.argmax(-1)],
                   digits[logits.argmin(-1)], CLEAN, CORRUPT, FilterStats(len(CLEAN), len(CLEAN), 0, 0),
                   [str(k) for k in range(10)])


@pytest.fixture(scope="module", params=LAYOUTS)
def case(request) -> Case:
    model = _layout_model(request.param)
    task = _task(model)
    scorer = EdgeScorer(model, task)
    return Case(request.param, model, task, scorer, scorer.attribute())


def _ld(model, task, logits_BV) -> float:
    rows = torch.arange(len(task))
    return float((logits_BV[rows, task.answer_B] - logits_BV[rows, task.distractor_B]).mean())


@torch.no_grad()
def _run(model, task, edits: dict, keep: list[str] = ()) -> tuple[float, dict]:
    """Mean LD of the clean prompts with plain bridge hooks replacing activations, and the
    activations at ``keep`` (keyed by the name asked for: the bridge fires aliases)."""
    got = {}

    def hook(name):
        def fn(acts, hook):
            out = edits[name](acts) if name in edits else acts
            if name in keep:
                got[name] = out
            return out
        return fn
    names = list(dict.fromkeys(list(edits) + list(keep)))
    with model.hooks(fwd_hooks=[(n, hook(n)) for n in names]):
        logits = model(task.clean_BT)[:, -1]
    return _ld(model, task, logits), got


def _cache(model, tokens_BT) -> dict[str, torch.Tensor]:
    n = model.cfg.n_layers
    hooks = [RESID_PRE] + [f"blocks.{l}.{h}" for l in range(n) for h in
                           ("attn.hook_z", "hook_mlp_out", "attn.hook_q", "attn.hook_k", "attn.hook_v")]
    return capture(model, tokens_BT, hooks)


def _edges(model) -> list[Edge]:
    """Every kind of edge, heads 0 and 1 of layer 1 sharing a key/value head under GQA."""
    H, L = model.cfg.n_heads, model.cfg.n_layers - 1
    names = ["input->a0.h0<q>", f"input->a0.h{H - 1}<k>", "input->a0.h1<v>", "a0.h0->a1.h0<k>", "a0.h0->a1.h1<k>",
             "a0.h1->a1.h0<v>", "a0.h1->a1.h1<v>", f"m0->a1.h{H - 1}<q>", "a0.h2->m0", "a0.h2->m1", "input->m0",
             f"a{L}.h0->m{L}", f"a{L}.h1->logits", f"m{L}->logits", "input->logits"]
    graph = set(all_edges(GraphConfig.of(model)))
    return [e for e in map(Edge.parse, names) if e in graph]


def _freeze_path_patch(model, task, edge: Edge, clean: dict, base: dict, ld_clean: float) -> float:
    """The edge's score by the freezing recipe, with plain hooks (module doc); ``clean`` and
    ``base`` (mean baseline) are ``_cache``s."""
    n_l = model.cfg.n_layers
    edits = {}
    for l in range(n_l):   # every head and MLP frozen to clean, the sender to its baseline
        z, mlp = f"blocks.{l}.attn.hook_z", f"blocks.{l}.hook_mlp_out"
        z_new = clean[z].clone()
        if edge.sender.startswith("a") and parse_node(edge.sender)[0] == l:
            h = parse_node(edge.sender)[1]
            z_new[:, :, h] = base[z][:, :, h]
        edits[z] = (lambda v: lambda a: v.clone())(z_new)
        edits[mlp] = (lambda v: lambda a: v.clone())(base[mlp] if edge.sender == f"m{l}" else clean[mlp])
    if edge.sender == "input":
        edits[RESID_PRE] = lambda a: base[RESID_PRE].clone()
    if edge.receiver == "logits":
        return _run(model, task, edits)[0] - ld_clean
    layer, head = parse_node(edge.receiver)
    if head is None:   # the MLP recomputes from clean + delta; its output carried into a clean run
        mlp = f"blocks.{layer}.hook_mlp_out"
        del edits[mlp]
        out = _run(model, task, edits, [mlp])[1][mlp]
        return _run(model, task, {mlp: lambda a: out.clone()})[0] - ld_clean
    z = f"blocks.{layer}.attn.hook_z"
    frozen_z = clean[z].clone()

    def all_but_receiver(a):
        out = frozen_z.clone()
        out[:, :, head] = a[:, :, head]
        return out
    edits[z] = all_but_receiver
    for c in "qkv":
        if c != edge.channel:
            hook = f"blocks.{layer}.attn.hook_{c}"
            edits[hook] = (lambda v: lambda a: v.clone())(clean[hook])
    z_recv = _run(model, task, edits, [z])[1][z][:, :, head]

    def only_receiver(a):
        out = a.clone()
        out[:, :, head] = z_recv
        return out
    return _run(model, task, {z: only_receiver})[0] - ld_clean


# --- node ablation -----------------------------------------------------------------------------------
def _plain_mean_ablation(model, task, keep: list[str], base: dict, ld_full: float) -> float:
    """Performance (%) of ``keep`` with every other head and MLP at its mean over ``base`` (a
    ``_cache`` of the corrupted prompts), written with plain hooks."""
    kept = {parse_node(n) for n in keep}
    edits = {}
    for l in range(model.cfg.n_layers):
        z, mlp = f"blocks.{l}.attn.hook_z", f"blocks.{l}.hook_mlp_out"
        off = [h for h in range(model.cfg.n_heads) if (l, h) not in kept]

        def heads(a, z=z, off=off):
            out = a.clone()
            out[:, :, off] = base[z].mean(0)[:, off]
            return out
        edits[z] = heads
        if (l, None) not in kept:
            edits[mlp] = (lambda m: lambda a: m.expand_as(a).clone())(base[mlp].mean(0))
    return 100 * _run(model, task, edits)[0] / ld_full


def test_node_ablation_matches_mean_ablation_with_plain_hooks(case):
    model, task = case.model, case.task
    ev = Evaluator(model, task)
    every = ev.shape.components()
    assert len(ev.shape.heads()) == model.cfg.n_layers * model.cfg.n_heads   # query heads, GQA or not
    base, ld_full = _cache(model, task.corrupt_BT), _run(model, task, {})[0]
    plain = lambda keep: _plain_mean_ablation(model, task, keep, base, ld_full)
    for keep in [every[::2], [n for n in every if n.startswith("a1.")], []]:
        assert ev.performance(keep) == pytest.approx(plain(keep), rel=1e-6)
    scores = ablation_scores(ev)
    worst = min(scores, key=scores.get)
    assert scores[worst] == pytest.approx(plain([n for n in every if n != worst]), rel=1e-6)
    found = discover_nodes(model, task, DiscoveryConfig(threshold=20.0, sweeps=("backward",), max_rounds=1),
                           evaluator=ev)
    assert found.performance == pytest.approx(plain(found.nodes), rel=1e-6) and found.performance >= 80.0 - 1e-9


# --- edges --------------------------------------------------------------------------------------------
def test_exact_patching_matches_path_patching_with_plain_hooks(case):
    model, task, edges = case.model, case.task, _edges(case.model)
    got = case.scorer.patch_edges(edges)
    clean = _cache(model, task.clean_BT)
    base = {h: v.mean(0, keepdim=True).expand_as(v) for h, v in _cache(model, task.corrupt_BT).items()}
    ld_clean = _run(model, task, {})[0]
    for e in edges:
        assert got.scores[e.name] == pytest.approx(_freeze_path_patch(model, task, e, clean, base, ld_clean),
                                                   abs=2e-6), e.name
    assert max(abs(got.scores[e.name]) for e in edges) > 1e-2    # not a vacuous 0 = 0


def test_eap_is_the_small_step_limit_of_exact_patching(case):
    edges = _edges(case.model)
    eps = 1e-2    # central differences: error O(eps^2), above the bridge's float32 softmax noise
    up, down = case.scorer.patch_edges(edges, alpha=eps), case.scorer.patch_edges(edges, alpha=-eps)
    for e in edges:
        slope = (up.scores[e.name] - down.scores[e.name]) / (2 * eps)
        assert case.eap.scores[e.name] == pytest.approx(slope, rel=1e-2, abs=2e-4), e.name
    assert max(abs(case.eap.scores[e.name]) for e in edges) > 1e-2
    layout = HeadLayout.of(case.model)
    if layout.group > 1:   # query heads sharing a key get their own share, not one score twice
        assert case.eap.scores["a0.h0->a1.h0<k>"] != pytest.approx(case.eap.scores["a0.h0->a1.h1<k>"], rel=1e-3)


def _resid_grads(model, task, edits=None) -> dict[str, torch.Tensor]:
    """dM/d(where each sender's output enters the residual stream), M the scorer's mean LD."""
    n = model.cfg.n_layers
    hooks = [RESID_PRE] + [f"blocks.{l}.hook_{k}_out" for l in range(n) for k in ("attn", "mlp")]
    metric = lambda logits: (logits[:, -1].gather(1, task.answer_B[:, None]) -
                             logits[:, -1].gather(1, task.distractor_B[:, None])).mean()
    with patching(model, edits or {}):
        return gradients(model, task.clean_BT, hooks, metric)[2]


def test_a_senders_edges_add_up_to_its_gradient_where_it_enters_the_residual(case):
    sc, eap = case.scorer, case.eap
    grads = _resid_grads(case.model, case.task)
    from_input = sum(s for n, s in eap.scores.items() if n.startswith("input->"))
    assert from_input == pytest.approx(float((sc.delta["input"] * grads[RESID_PRE]).sum()), rel=1e-5, abs=1e-9)
    for node, score in eap.node_scores.items():
        layer, head = parse_node(node)
        g = grads[f"blocks.{layer}.hook_{'attn' if head is not None else 'mlp'}_out"]
        assert score == pytest.approx(float((sc.delta[node] * g).sum()), rel=1e-5, abs=1e-9), node


def test_eap_ig_sums_its_steps_and_is_complete_against_patching_the_input(case):
    sc, steps = case.scorer, 4
    from_input = lambda g: sum(s for n, s in g.scores.items() if n.startswith("input->"))
    coarse = from_input(sc.attribute(ig_steps=steps))
    want = 0.0
    for i in range(steps):
        alpha = (i + 1) / steps
        at = sc.base_input + alpha * (sc.clean_input - sc.base_input)
        g = _resid_grads(case.model, case.task, {RESID_PRE: lambda a: at.to(a)})[RESID_PRE]
        want += float((sc.delta["input"] * g).sum()) / steps
    assert coarse == pytest.approx(want, rel=1e-5)
    # completeness: the Riemann sums tend to M(input at baseline) - M(clean) as 1/steps;
    # Richardson's 2 S(2k) - S(k) removes that term
    fine = from_input(sc.attribute(ig_steps=2 * steps))
    patched = _run(case.model, case.task, {RESID_PRE: lambda a: sc.base_input.to(a).clone()})[0] - sc.ld_clean
    assert 2 * fine - coarse == pytest.approx(patched, rel=0.03)
    assert abs(fine - patched) < abs(coarse - patched)


def test_grouped_key_value_gradients_split_per_query_head(case):
    layout, model, task = HeadLayout.of(case.model), case.model, case.task
    if layout.group == 1:
        pytest.skip(f"{case.name} has one key/value head per query head")
    n = model.cfg.n_layers
    hooks = [f"blocks.{l}.attn.hook_{h}" for l in range(n) for h in ("k", "v", "attn_scores", "z")]
    metric = lambda logits: (logits[:, -1].gather(1, task.answer_B[:, None]) -
                             logits[:, -1].gather(1, task.distractor_B[:, None])).sum()
    _, _, grads = gradients(model, task.clean_BT, hooks, metric)
    split = split_kv_grads(model, layout, task.clean_BT, {}, grads)
    for l in range(n):
        for c in "kv":
            per_head = split[f"blocks.{l}.attn.hook_{c}"]                       # [B, T, H, E]
            grouped = per_head.unflatten(2, (layout.n_kv_heads, layout.group)).sum(3)
            assert torch.allclose(grouped, grads[f"blocks.{l}.attn.hook_{c}"], atol=1e-10)
            assert not torch.allclose(per_head[:, :, 0], per_head[:, :, 1])    # siblings differ


def test_paper_edges_read_a_shared_key_for_one_query_head(case):
    """The authors' path patching inside a small mean-ablated circuit whose layer-1 heads 0 and 1
    share a key under GQA: the edge into head 1's k equals plain hooks that carry head 1's z over
    (the sibling in the circuit keeps its value), and the edge to the logits the frozen run."""
    model, task = case.model, case.task
    nodes = ["a0.h0", "m0", "a1.h0", "a1.h1", "m1"]
    g = paper_edges(model, task, nodes)
    corrupt_means = _cache(model, task.corrupt_BT)
    ablate = {}
    for l in range(model.cfg.n_layers):   # every head outside the circuit to its corrupted mean (MLPs all in)
        off = [h for h in range(model.cfg.n_heads) if f"a{l}.h{h}" not in nodes]
        mean = corrupt_means[f"blocks.{l}.attn.hook_z"].mean(0)

        def to_mean(a, off=off, mean=mean):
            out = a.clone()
            out[:, :, off] = mean[:, off]
            return out
        ablate[f"blocks.{l}.attn.hook_z"] = to_mean
    z_hooks = [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]
    orig = _run(model, task, ablate, z_hooks)[1]
    with patching(model, ablate):
        new = capture(model, task.corrupt_BT, z_hooks)
    ld_full = _run(model, task, {})[0]
    z0, z1, k1 = z_hooks[0], z_hooks[1], "blocks.1.attn.hook_k"
    frozen = {h: (lambda v: lambda a: v.clone())(orig[h]) for h in z_hooks}
    sent = orig[z0].clone()
    sent[:, :, 0] = new[z0][:, :, 0]       # a0.h0 corrupted, every head frozen, MLPs recompute
    frozen[z0] = lambda a: sent.clone()
    ld_logits, got = _run(model, task, frozen, [k1])
    assert g.scores["a0.h0->logits"] == pytest.approx(ld_logits - ld_full, abs=1e-6)
    z_recv = _run(model, task, {**ablate, k1: lambda a: got[k1].clone()}, [z1])[1][z1][:, :, 1]

    def only_head_1(a):
        out = ablate[z1](a)
        out[:, :, 1] = z_recv
        return out
    want = _run(model, task, {**ablate, z1: only_head_1})[0] - ld_full
    assert g.scores["a0.h0->a1.h1<k>"] == pytest.approx(want, abs=1e-6)
    assert abs(want) > 1e-3


# --- head analyses ------------------------------------------------------------------------------------
def test_ov_outputs_match_the_hf_modules(case):
    """The head's OV write from the HF attention's own projections: its key/value head's rows of
    v_proj (with its bias), its columns of o_proj, Gemma's post-attention norm."""
    model = case.model
    x = torch.randn(5, model.cfg.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    layer = model.cfg.n_layers - 1
    block, hf = model.blocks[layer], model.original_model
    layers = hf.gpt_neox.layers if hasattr(hf, "gpt_neox") else (hf.transformer.h if hasattr(hf, "transformer")
                                                                   else hf.model.layers)
    E, layout = model.cfg.d_head, HeadLayout.of(model)
    for head in (0, model.cfg.n_heads - 1):
        kv = head // layout.group
        v_all = _hf_values(layers[layer], block.ln1(x), model.cfg)   # [M, n_kv, E]
        out = v_all[:, kv] @ _hf_out_weight(layers[layer])[:, head * E:(head + 1) * E].T
        if hasattr(block, "ln1_post"):
            out = layers[layer].post_attention_layernorm(out)
        assert torch.allclose(ov_outputs(model, x, layer, head, bias=True), out, atol=1e-10)
    scores = ov_scores(model, "digits")
    assert len(scores) == model.cfg.n_layers * model.cfg.n_heads
    assert all(0 <= s.next_score <= 1 and 0 <= s.copy_score <= 1 for s in scores)


def _hf_values(hf_layer, y_MD, cfg) -> torch.Tensor:
    """Every key/value head's value of normed residuals, from the HF module's weights."""
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    if hasattr(hf_layer, "self_attn"):                                # Llama, Qwen2, Gemma 2
        return hf_layer.self_attn.v_proj(y_MD).view(len(y_MD), n_kv, cfg.d_head)
    if hasattr(hf_layer, "attention"):                                # GPT-NeoX: per head q, k, v
        qkv = hf_layer.attention.query_key_value(y_MD).view(len(y_MD), cfg.n_heads, 3, cfg.d_head)
        return qkv[:, :, 2]
    d = cfg.d_model                                                   # GPT-2: Conv1D [q | k | v]
    return hf_layer.attn.c_attn(y_MD)[:, 2 * d:].view(len(y_MD), n_kv, cfg.d_head)


def _hf_out_weight(hf_layer) -> torch.Tensor:
    """``[d_model, n_heads * d_head]``: the output projection as ``out = z @ W.T``."""
    if hasattr(hf_layer, "self_attn"):
        return hf_layer.self_attn.o_proj.weight
    if hasattr(hf_layer, "attention"):
        return hf_layer.attention.dense.weight
    return hf_layer.attn.c_proj.weight.T     # Conv1D stores [in, out]


def test_logit_lens_and_attention_summary(case):
    model, task = case.model, case.task
    rows = logit_lens(model, task)
    with torch.no_grad():
        probs = torch.softmax(model(task.clean_BT)[:, -1].double(), -1)
    assert rows[-1].p_answer == pytest.approx(float(probs.gather(1, task.answer_B[:, None]).mean()), rel=1e-6)
    assert len(rows) == model.cfg.n_layers + 1
    summary = {s.head: s for s in attention_summary(model, task)}
    pats = capture(model, task.clean_BT, ["blocks.1.attn.hook_pattern"])["blocks.1.attn.hook_pattern"].mean(0)
    h = model.cfg.n_heads - 1
    assert summary[f"a1.h{h}"].last_to_last_member == pytest.approx(float(pats[h, -1, -1]), rel=1e-6)

