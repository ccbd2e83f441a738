"""Edge scores on the graph schema of ``graph.py``: exact path patching, one forward pass per edge,
and attribution patching (EAP), every edge at once, with its integrated-gradients variant (EAP-IG).
These are this tool's methods, on the full model; the authors' (arXiv 2311.04131) path patching
inside the mean-ablated circuit is ``edge_pruning.py``.

An edge's sender writes ``out_s`` into the residual stream (the embedding for ``input``: GPT-2's
position embedding and Gemma's sqrt(d_model) scale included, as ``blocks.0.hook_resid_pre`` holds
it; a head's write; the MLP's ``hook_mlp_out``); its baseline is the mean over the corrupted
prompts per position (``baseline="mean"``, as node discovery ablates: the head's ``hook_z`` mean)
or the paired corrupted prompt's own value (``"corrupt"``). ``delta[s]`` is the change of the
residual stream when the sender alone takes its baseline (``head_io.head_deltas``: linear in
``hook_z``, or through Gemma 2's post-norm). Scores are changes of the task metric (mean logit
difference) when ``delta[s]`` reaches one receiver only:

- **path patching**: the receiver alone reads ``clean input + delta_s``; for a head's q, k or v
  the head's projection of ``ln1(x + delta_s)`` replaces that head's q, k or v (a shared GQA key
  or value: for that query head alone, ``head_io.channel_edits``). Everything upstream is
  untouched by construction; the effect flows on downstream through the real model (soft-capping
  included). ``alpha`` scales ``delta``: ``score(alpha) / alpha`` tends to EAP's score as alpha -> 0.
- **EAP**: ``delta_s . dM/d(receiver input)`` summed over positions, with the gradient of the
  clean run; a head receiver's gradient is pulled back through its layer's ``ln1`` (whatever norm
  it is) and W_Q, W_K or W_V (``head_io.pull_back``; a shared k or v split per query head by
  ``head_io.split_kv_grads``), an MLP's and the logits' are read with zero probes at ``ln2.hook_in``
  / ``ln_final.hook_in`` (``hooks.gradients``). In a sequential-residual model (GPT-2, Llama, Qwen2,
  Gemma 2) ``ln2.hook_in`` is after the layer's attention, so a layer's heads feed its own MLP
  (``graph.all_edges`` lists those edges); in a parallel one (GPT-NeoX) the probe gives the MLP's
  share of the shared input alone.
- **EAP-IG**: the gradient averaged over ``ig_steps`` runs whose input embedding moves from the
  baseline to the clean one (alpha = 1/k .. 1), as in Hanna et al. 2024 ("inputs" mode).
"""
from __future__ import annotations

from typing import Callable

import torch

from sae_core.circuits.graph import CHANNELS, CircuitGraph, Edge, GraphConfig, all_edges, senders
from sae_core.circuits.head_io import HeadLayout, channel_edits, head_deltas, project, pull_back, split_kv_grads
from sae_core.circuits.metrics import logit_diff
from sae_core.circuits.tasks import CircuitError, TaskSet
from sae_core.models.hooks import Edit, capture, gradients, patching

BASELINES = ("mean", "corrupt")
INPUT_HOOK = "blocks.0.hook_resid_pre"
Progress = Callable[[int, int, str], None]


def _receiver_hooks(layer: int, grouped: bool) -> list[str]:
    """Where a layer's receivers are read; with GQA also what ``split_kv_grads`` needs."""
    split = [f"blocks.{layer}.attn.hook_attn_scores", f"blocks.{layer}.attn.hook_z"] if grouped else []
    return [f"blocks.{layer}.attn.hook_{c}" for c in CHANNELS] + [f"blocks.{layer}.ln1.hook_in",
                                                                  f"blocks.{layer}.ln2.hook_in"] + split


def _wide(t: torch.Tensor) -> torch.Tensor:
    """At least float32 (sums over prompts), float64 kept (tests that need the precision)."""
    return t if t.dtype == torch.float64 else t.float()


class EdgeScorer:
    """Everything edge scoring needs for one task: each sender's change of the residual stream
    towards its baseline (``delta``, per prompt), computed once."""

    def __init__(self, model, task: TaskSet, baseline: str = "mean", batch: int = 32):
        if baseline not in BASELINES:
            raise CircuitError(f"baseline={baseline!r}: choose one of {', '.join(BASELINES)}")
        self.model, self.task, self.baseline, self.batch = model, task, baseline, batch
        self.cfg = GraphConfig.of(model)
        self.layout = HeadLayout.of(model)
        self.device = next(model.parameters()).device
        clean = self._raw(task.clean_BT)
        base = self._raw(task.corrupt_BT)
        if baseline == "mean":
            base = {h: v.mean(0, keepdim=True).expand_as(v) for h, v in base.items()}
        self.base_raw = {h: v for h, v in base.items() if h != INPUT_HOOK}   # hook_z, hook_mlp_out
        self.clean_input, self.base_input = _wide(clean[INPUT_HOOK]), _wide(base[INPUT_HOOK])
        self.delta = self._deltas(clean, base)                               # [B, T, d] per sender
        self.ld_clean = self.metric_of(self._last_logits({}))

    # --- model access -------------------------------------------------------------------------------
    def _raw(self, tokens_BT: torch.Tensor) -> dict[str, torch.Tensor]:
        """The embedding, every layer's ``hook_z`` and ``hook_mlp_out``, on ``tokens_BT``."""
        n_l = self.cfg.n_layers
        hooks = [INPUT_HOOK] + [f"blocks.{l}.attn.hook_z" for l in range(n_l)] + \
                [f"blocks.{l}.hook_mlp_out" for l in range(n_l)]
        return capture(self.model, tokens_BT.to(self.device), hooks)

    def _deltas(self, clean: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each sender's change of the residual stream when it alone takes its baseline (module doc)."""
        out = {"input": _wide(base[INPUT_HOOK]) - _wide(clean[INPUT_HOOK])}
        for layer in range(self.cfg.n_layers):
            z = f"blocks.{layer}.attn.hook_z"
            heads = head_deltas(self.model, layer, self.layout, clean[z], base[z])
            out.update({f"a{layer}.h{h}": _wide(heads[:, :, h]) for h in range(self.cfg.n_heads)})
            mlp = f"blocks.{layer}.hook_mlp_out"
            out[f"m{layer}"] = _wide(base[mlp]) - _wide(clean[mlp])
        return out

    def metric_of(self, last_logits_BV: torch.Tensor) -> float:
        return float(logit_diff(last_logits_BV, self.task.answer_B.to(last_logits_BV.device),
                                self.task.distractor_B.to(last_logits_BV.device)).mean())

    @torch.no_grad()
    def _last_logits(self, edits: dict[str, Edit]) -> torch.Tensor:
        with patching(self.model, edits):
            return _wide(self.model(self.task.clean_BT.to(self.device))[:, -1])

    # --- exact path patching --------------------------------------------------------------------------
    def _edge_edits(self, edge: Edge, alpha: float) -> dict[str, Edit]:
        delta = alpha * self.delta[edge.sender].to(self.device)
        if edge.receiver == "logits":
            return {"ln_final.hook_in": lambda a: a + delta.to(a)}
        layer = int(edge.receiver[1:].split(".")[0])
        if edge.receiver.startswith("m"):
            return {f"blocks.{layer}.ln2.hook_in": lambda a: a + delta.to(a)}
        head = int(edge.receiver.split(".h")[1])
        x = self._clean[f"blocks.{layer}.ln1.hook_in"]
        new = project(self.model, layer, edge.channel, self.layout.index(head, edge.channel), x + delta.to(x))
        z_clean = self._clean.get(f"blocks.{layer}.attn.hook_z")    # captured under GQA only
        return channel_edits(self.layout, layer, head, edge.channel, new, z_clean)

    def patch_edges(self, edges: list[Edge] | None = None, on_progress: Progress | None = None,
                    alpha: float = 1.0) -> CircuitGraph:
        """Exact path patching of each edge (default: every edge of the graph), one forward pass each,
        on the full model with this scorer's baseline. In the circuit: edges whose patching leaves
        less than 80% of the logit difference, the authors' cut on this tool's computation (theirs,
        path patching inside the mean-ablated circuit, is ``edge_pruning.paper_edges``). ``alpha``:
        the fraction of the way to the baseline each edge is moved (1: the whole way); scores are
        not divided by it."""
        edges = edges if edges is not None else all_edges(self.cfg)
        n_l = self.cfg.n_layers
        hooks = [f"blocks.{l}.ln1.hook_in" for l in range(n_l)]
        if self.layout.group > 1:   # a shared k / v patch gives the other query heads their clean z back
            hooks += [f"blocks.{l}.attn.hook_z" for l in range(n_l)]
        self._clean = capture(self.model, self.task.clean_BT.to(self.device), hooks)
        scores = {}
        for i, edge in enumerate(edges):
            if on_progress and i % 25 == 0:
                on_progress(i, len(edges), f"path patching {edge.name}")
            scores[edge.name] = self.metric_of(self._last_logits(self._edge_edits(edge, alpha))) - self.ld_clean
        keep = frozenset(n for n, s in scores.items() if (self.ld_clean + s) / self.ld_clean < 0.8)
        return CircuitGraph(self.cfg, scores, keep, meta=self._meta("path patching", **(
            {"alpha": alpha} if alpha != 1.0 else {})))

    def patch_nodes(self, on_progress: Progress | None = None) -> dict[str, float]:
        """Exact activation patching of each head and MLP alone (its output set to the baseline):
        the metric's change, per component (with the mean baseline: single-component mean ablation)."""
        out = {}
        comps = senders(self.cfg)[1:]
        for i, node in enumerate(comps):
            if on_progress:
                on_progress(i, len(comps), f"patching {node}")
            layer = int(node[1:].split(".")[0])
            if node.startswith("m"):
                hook = f"blocks.{layer}.hook_mlp_out"
                edit = (lambda base: lambda a: base.to(a).clone())(self.base_raw[hook])
            else:
                hook, head = f"blocks.{layer}.attn.hook_z", int(node.split(".h")[1])
                edit = head_to(self.base_raw[hook], head)
            out[node] = self.metric_of(self._last_logits({hook: edit})) - self.ld_clean
        return out

    # --- attribution patching -------------------------------------------------------------------------
    def _receiver_grads(self, rows: slice, alpha: float | None) -> dict[str, torch.Tensor]:
        """``[b, T, d]`` gradient of the metric at each receiver's input, for the prompts ``rows``."""
        n_l, n_h, grouped = self.cfg.n_layers, self.cfg.n_heads, self.layout.group > 1
        tokens = self.task.clean_BT[rows].to(self.device)
        ans, dis = self.task.answer_B[rows].to(self.device), self.task.distractor_B[rows].to(self.device)
        n_all = self.task.clean_BT.shape[0]
        metric = lambda logits: logit_diff(logits[:, -1], ans, dis).sum() / n_all
        hooks = ["ln_final.hook_in"] + [h for layer in range(n_l) for h in _receiver_hooks(layer, grouped)]
        edits = {}
        if alpha is not None:
            start, end = self.base_input[rows].to(self.device), self.clean_input[rows].to(self.device)
            edits = {INPUT_HOOK: lambda a: (start + alpha * (end - start)).to(a)}
        with patching(self.model, edits):
            _, acts, grads = gradients(self.model, tokens, hooks, metric)
        if grouped:   # each query head's share of the gradient at its shared k and v
            grads.update(split_kv_grads(self.model, self.layout, tokens, edits, grads))
        out = {"logits": grads["ln_final.hook_in"]}
        for layer in range(n_l):
            g_x = pull_back(self.model, layer, self.layout, acts[f"blocks.{layer}.ln1.hook_in"],
                            {c: grads[f"blocks.{layer}.attn.hook_{c}"] for c in CHANNELS})
            for i, c in enumerate(CHANNELS):
                out.update({f"a{layer}.h{h}<{c}>": g_x[:, :, i, h] for h in range(n_h)})
            out[f"m{layer}"] = grads[f"blocks.{layer}.ln2.hook_in"]
        return out

    def attribute(self, ig_steps: int = 0, on_progress: Progress | None = None) -> CircuitGraph:
        """EAP (``ig_steps=0``: 2 forward passes and 1 backward) or EAP-IG (``ig_steps`` >= 2
        interpolation steps), every edge scored. Nothing is put in the circuit: choose with
        ``with_threshold`` or ``top_n``."""
        if ig_steps == 1 or ig_steps < 0:
            raise CircuitError(f"ig_steps={ig_steps}: 0 for plain EAP, or 2 or more integration steps (5 is usual)")
        edges = all_edges(self.cfg)
        scores = dict.fromkeys((e.name for e in edges), 0.0)
        alphas = [None] if ig_steps == 0 else [(i + 1) / ig_steps for i in range(ig_steps)]
        n = self.task.clean_BT.shape[0]
        chunks = [slice(s, s + self.batch) for s in range(0, n, self.batch)]
        for k, rows in enumerate(chunks):
            if on_progress:
                on_progress(k, len(chunks), f"attribution patching: prompts {rows.start}-{min(rows.stop, n)}")
            grads = None
            for alpha in alphas:
                g = self._receiver_grads(rows, alpha)
                grads = g if grads is None else {r: grads[r] + g[r] for r in g}
            for e in edges:
                recv = e.receiver + (f"<{e.channel}>" if e.channel else "")
                d = self.delta[e.sender][rows].to(self.device)
                scores[e.name] += float((d * grads[recv]).sum()) / len(alphas)
        nodes = dict.fromkeys(senders(self.cfg)[1:], 0.0)
        for e in edges:  # dM/d(out_s) is the sum of the gradients at every receiver reading s
            if e.sender in nodes:
                nodes[e.sender] += scores[e.name]
        return CircuitGraph(self.cfg, scores, node_scores=nodes,
                            meta=self._meta("EAP-IG" if ig_steps else "EAP", ig_steps=ig_steps))

    def _meta(self, method: str, **extra) -> dict:
        return {"task": self.task.cfg.task, "template": self.task.cfg.template, "method": method,
                "baseline": self.baseline, "ld_clean": self.ld_clean, "n_prompts": len(self.task), **extra}


def head_to(base_BTHE: torch.Tensor, head: int) -> Edit:
    """An edit setting one head's slice of a per-head activation (``[B, T, H, E]``) to ``base``'s."""
    def edit(a):
        out = a.clone()
        out[:, :, head] = base_BTHE[:, :, head].to(out)
        return out
    return edit
