"""Edge scores on the graph schema of ``graph.py``: exact path patching, one forward pass per edge,
and attribution patching (EAP), every edge at once, with its integrated-gradients variant (EAP-IG).
These are this tool's methods, on the full model; the authors' (arXiv 2311.04131) path patching
inside the mean-ablated circuit is ``edge_pruning.py``.

An edge's sender writes ``out_s`` into the residual stream (the embedding for ``input``, ``z_h W_O``
for a head, the MLP's output); its baseline is the mean over the corrupted prompts per position
(``baseline="mean"``, as node discovery ablates) or the paired corrupted prompt's own value
(``"corrupt"``). Scores are changes of the task metric (mean logit difference) when the sender's
output is replaced by its baseline along that one edge only:

- **path patching**: the receiver alone reads ``clean input + delta_s``; for a head's q, k or v
  the head's projection of ``ln1(x + delta_s)`` replaces that head's q, k or v. Everything
  upstream is untouched by construction; the effect flows on downstream.
- **EAP**: ``delta_s . dM/d(receiver input)`` summed over positions, with the gradient of the
  clean run; a head receiver's gradient is pulled back through its layer norm and W_Q, W_K or W_V
  (one vector-Jacobian product for all heads of a layer), an MLP's and the logits' are read with
  zero probes at ``ln2.hook_in`` / ``ln_final.hook_in`` (``hooks.gradients``).
- **EAP-IG**: the gradient averaged over ``ig_steps`` runs whose input embedding moves from the
  baseline to the clean one (alpha = 1/k .. 1), as in Hanna et al. 2024 ("inputs" mode).
"""
from __future__ import annotations

from typing import Callable

import torch

from sae_core.circuits.graph import CHANNELS, CircuitGraph, Edge, GraphConfig, all_edges
from sae_core.circuits.metrics import logit_diff
from sae_core.circuits.tasks import CircuitError, TaskSet
from sae_core.models.hooks import Edit, capture, gradients, patching

BASELINES = ("mean", "corrupt")
INPUT_HOOK = "blocks.0.hook_resid_pre"
Progress = Callable[[int, int, str], None]


def _receiver_hooks(layer: int) -> list[str]:
    return [f"blocks.{layer}.attn.hook_{c}" for c in CHANNELS] + [f"blocks.{layer}.ln1.hook_in",
                                                                  f"blocks.{layer}.ln2.hook_in"]


class EdgeScorer:
    """Everything edge scoring needs for one task: sender outputs on the clean and baseline runs
    (per prompt), computed once."""

    def __init__(self, model, task: TaskSet, baseline: str = "mean", batch: int = 32):
        if baseline not in BASELINES:
            raise CircuitError(f"baseline={baseline!r}: choose one of {', '.join(BASELINES)}")
        self.model, self.task, self.baseline, self.batch = model, task, baseline, batch
        self.cfg = GraphConfig.of(model)
        self.device = next(model.parameters()).device
        self.senders_clean, _ = self._sender_outputs(task.clean_BT)
        base, self.base_raw = self._sender_outputs(task.corrupt_BT)
        if baseline == "mean":
            base = {s: v.mean(0, keepdim=True).expand_as(v) for s, v in base.items()}
            self.base_raw = {h: v.mean(0, keepdim=True).expand_as(v) for h, v in self.base_raw.items()}
        self.delta = {s: base[s] - self.senders_clean[s] for s in base}    # [B, T, d] per sender
        self.base_input = base["input"]
        self.ld_clean = self.metric_of(self._last_logits({}))

    # --- model access -------------------------------------------------------------------------------
    @torch.no_grad()
    def _sender_outputs(self, tokens_BT: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Each sender's output in the residual stream, and the raw ``hook_z`` / ``hook_mlp_out``."""
        n_l = self.cfg.n_layers
        hooks = [INPUT_HOOK] + [f"blocks.{l}.attn.hook_z" for l in range(n_l)] + \
                [f"blocks.{l}.hook_mlp_out" for l in range(n_l)]
        got = capture(self.model, tokens_BT.to(self.device), hooks)
        out = {"input": got[INPUT_HOOK].float()}
        for layer in range(n_l):
            heads = torch.einsum("bthe,hed->bthd", got[f"blocks.{layer}.attn.hook_z"], self.model.blocks[layer].attn.W_O)
            out.update({f"a{layer}.h{h}": heads[:, :, h].float() for h in range(self.cfg.n_heads)})
            out[f"m{layer}"] = got[f"blocks.{layer}.hook_mlp_out"].float()
        return out, {h: got[h] for h in hooks[1:]}

    def metric_of(self, last_logits_BV: torch.Tensor) -> float:
        return float(logit_diff(last_logits_BV, self.task.answer_B.to(last_logits_BV.device),
                                self.task.distractor_B.to(last_logits_BV.device)).mean())

    @torch.no_grad()
    def _last_logits(self, edits: dict[str, Edit]) -> torch.Tensor:
        with patching(self.model, edits):
            return self.model(self.task.clean_BT.to(self.device))[:, -1].float()

    # --- exact path patching --------------------------------------------------------------------------
    def _edge_edits(self, edge: Edge) -> dict[str, Edit]:
        delta = self.delta[edge.sender].to(self.device)
        if edge.receiver == "logits":
            return {"ln_final.hook_in": lambda a: a + delta.to(a)}
        layer = int(edge.receiver[1:].split(".")[0])
        if edge.receiver.startswith("m"):
            return {f"blocks.{layer}.ln2.hook_in": lambda a: a + delta.to(a)}
        head = int(edge.receiver.split(".h")[1])
        x = self._ln1_inputs[layer]
        attn = self.model.blocks[layer].attn
        w, b = {"q": (attn.W_Q, attn.b_Q), "k": (attn.W_K, attn.b_K), "v": (attn.W_V, attn.b_V)}[edge.channel]
        with torch.no_grad():
            new_BTE = self.model.blocks[layer].ln1(x + delta) @ w[head] + b[head]

        def edit(a):
            out = a.clone()
            out[:, :, head] = new_BTE.to(out)
            return out
        return {f"blocks.{layer}.attn.hook_{edge.channel}": edit}

    def patch_edges(self, edges: list[Edge] | None = None, on_progress: Progress | None = None) -> CircuitGraph:
        """Exact path patching of each edge (default: every edge of the graph), one forward pass each,
        on the full model with this scorer's baseline. In the circuit: edges whose patching leaves
        less than 80% of the logit difference, the authors' cut on this tool's computation (theirs,
        path patching inside the mean-ablated circuit, is ``edge_pruning.paper_edges``)."""
        edges = edges if edges is not None else all_edges(self.cfg)
        self._ln1_inputs = capture(self.model, self.task.clean_BT.to(self.device),
                                   [f"blocks.{l}.ln1.hook_in" for l in range(self.cfg.n_layers)])
        self._ln1_inputs = {l: self._ln1_inputs[f"blocks.{l}.ln1.hook_in"] for l in range(self.cfg.n_layers)}
        scores = {}
        for i, edge in enumerate(edges):
            if on_progress and i % 25 == 0:
                on_progress(i, len(edges), f"path patching {edge.name}")
            scores[edge.name] = self.metric_of(self._last_logits(self._edge_edits(edge))) - self.ld_clean
        keep = frozenset(n for n, s in scores.items() if (self.ld_clean + s) / self.ld_clean < 0.8)
        return CircuitGraph(self.cfg, scores, keep, meta=self._meta("path patching"))

    def patch_nodes(self, on_progress: Progress | None = None) -> dict[str, float]:
        """Exact activation patching of each head and MLP alone (its output set to the baseline):
        the metric's change, per component (with the mean baseline: single-component mean ablation)."""
        out = {}
        comps = [n for n in self.senders_clean if n != "input"]
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
        n_l, n_h = self.cfg.n_layers, self.cfg.n_heads
        tokens = self.task.clean_BT[rows].to(self.device)
        ans, dis = self.task.answer_B[rows].to(self.device), self.task.distractor_B[rows].to(self.device)
        n_all = self.task.clean_BT.shape[0]
        metric = lambda logits: logit_diff(logits[:, -1], ans, dis).sum() / n_all
        hooks = ["ln_final.hook_in"] + [h for layer in range(n_l) for h in _receiver_hooks(layer)]
        edits = {}
        if alpha is not None:
            start, end = self.base_input[rows].to(self.device), self.senders_clean["input"][rows].to(self.device)
            edits = {INPUT_HOOK: lambda a: (start + alpha * (end - start)).to(a)}
        with patching(self.model, edits):
            _, acts, grads = gradients(self.model, tokens, hooks, metric)
        out = {"logits": grads["ln_final.hook_in"]}
        for layer in range(n_l):
            attn, ln1 = self.model.blocks[layer].attn, self.model.blocks[layer].ln1
            x = acts[f"blocks.{layer}.ln1.hook_in"]
            x_rep = x[:, :, None].expand(*x.shape[:2], 3 * n_h, x.shape[-1]).clone().requires_grad_(True)
            with torch.enable_grad():
                y = ln1(x_rep).view(*x.shape[:2], 3, n_h, x.shape[-1])
                proj = [torch.einsum("bthd,hde->bthe", y[:, :, i], w) for i, w in enumerate((attn.W_Q, attn.W_K, attn.W_V))]
                (g_x,) = torch.autograd.grad(proj, x_rep, [grads[f"blocks.{layer}.attn.hook_{c}"] for c in CHANNELS])
            g_x = g_x.view(*x.shape[:2], 3, n_h, x.shape[-1])
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
        nodes = dict.fromkeys((n for n in self.senders_clean if n != "input"), 0.0)
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
