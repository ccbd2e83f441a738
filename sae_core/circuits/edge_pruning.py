"""The authors' edges (apartresearch/seqcont_circuits, ``src/iter_edge_pruning``): path patching
inside the mean-ablated circuit, every edge between the circuit's components scored once, an edge
kept when patching it leaves the logit difference under 0.8 of the full model's.

What ``run_edge_ablation.py`` does, reproduced here (its functions in ``edge_pruning_fns.py``):
1. The circuit runs with every other head and MLP replaced by its mean over the corrupted prompts
   per position (``add_ablation_hook_MLP_head``, ``node_ablation_fns.py``). Their MLP means are
   taken with the circuit's other heads already ablated (the head hook is in place when
   ``get_MLPs_actv_mean`` runs); so are these (``paper_means``).
2. Two runs of that circuit cache every head's ``hook_z`` and every MLP's ``hook_mlp_out``: on the
   clean prompts (their ``orig_cache``) and on the paired corrupted ones (``new_cache``).
3. A sender's corrupted output is sent on, then the receiver alone reads what arrives
   (``circ_path_patch_head_to_heads`` and its siblings): a clean run of the circuit with the
   sender patched caches the receiver's input, and a second clean run patches only that (a head's
   q, k or v, separately; an MLP's output). For a head sender every head is frozen to its clean
   value but the sender, MLPs recompute (``patch_head_vectors``). For an MLP sender to an MLP only
   the sender's ``hook_mlp_out`` is patched (``patch_mlp_vectors``), nothing frozen.
4. Edges to the logits: the run of step 3 with the sender patched, read at the end
   (``get_path_patch_head_to_final_resid_post`` / ``..._mlp_to_final_resid_post``).
5. Score = mean LD of the patched run / mean LD of the *full* model (``logit_diff_perc`` with
   ``orig_score`` from the unablated model); kept when ``score < 0.8 and score != 0``. Every edge
   is scored against the same circuit and nothing is removed before another edge is scored, so
   the order in which they are tried does not change the result. No edge leaves the input (they
   score none), and nothing is pruned afterwards.

Two quirks of their code, reproduced and named (``QUIRKS``):
- ``circ_path_patch_mlp_to_head`` hooks ``hook_z`` (its filter ends with ``"z"`` or the misspelt
  ``"mlpout"``), so the sender patched for ``m{L} -> head`` is layer L's attention output, all its
  heads, not the MLP;
- ``get_path_patch_mlp_to_final_resid_post`` adds a hook per sender and never removes it, and
  ``patch_mlp_vectors`` does not reset what an earlier hook patched: the score of ``m{L} ->
  logits`` patches, at once, the MLP output and the attention output of L and of every circuit
  MLP's layer before it.
Other layouts (their code ran GPT-2, without grouped-query attention): under GQA a receiver
head's k or v is its share of the shared key/value head, the group's other query heads keeping
their values of the circuit's clean run (``head_io``); Gemma 2's post-norms and soft-capping are
inside the forward passes, nothing to do by hand.
Not reproduced: their prompts carry no BOS (GPT-2's tokenizer called without it); these start with
BOS, as every prompt of this project does.
"""
from __future__ import annotations

from typing import Callable

import torch

from sae_core.circuits.ablation import (Means, ModelShape, ablation_edits, compute_means, last_logits, mlp_hook,
                                       parse_node, z_hook)
from sae_core.circuits.edges import head_to
from sae_core.circuits.graph import CHANNELS, CircuitGraph, GraphConfig
from sae_core.circuits.head_io import HeadLayout, channel_edits
from sae_core.circuits.metrics import logit_diff
from sae_core.circuits.tasks import CircuitError, TaskSet
from sae_core.models.hooks import Edit, capture, patching

PAPER_RATIO = 0.8   # run_edge_ablation.py --threshold
QUIRKS = ("m{L} -> head patches layer L's attention output (the authors' hook_z filter)",
          "m{L} -> logits patches every circuit MLP's layer up to L at once (hooks left in place)")
Progress = Callable[[int, int, str], None]


def paper_means(model, corrupt_BT: torch.Tensor, shape: ModelShape, nodes: list[str]) -> Means:
    """Means over the corrupted prompts as ``add_ablation_hook_MLP_head`` takes them: heads' from
    the model as it is, MLPs' with the heads outside ``nodes`` already mean-ablated."""
    plain = compute_means(model, corrupt_BT, shape)
    heads_off = {h: e for h, e in ablation_edits(shape, plain, nodes).items() if h.endswith("hook_z")}
    with patching(model, heads_off):
        ablated = compute_means(model, corrupt_BT, shape)
    return Means(plain.z_LTHE, ablated.mlp_LTD, "corrupt")


def _then(first: Edit | None, second: Edit) -> Edit:
    return second if first is None else (lambda a: second(first(a)))


def _replace(value: torch.Tensor) -> Edit:
    return lambda a: value.to(a).clone()


class _Batch:
    """One batch of prompts: the circuit's clean and corrupted caches, and its forward passes."""

    def __init__(self, model, shape: ModelShape, ablate: dict[str, Edit], clean_BT, corrupt_BT, answer_B,
                 distractor_B):
        self.model, self.shape, self.ablate = model, shape, ablate
        self.device = next(model.parameters()).device
        self.tokens, self.answer, self.distractor = clean_BT.to(self.device), answer_B, distractor_B
        hooks = [z_hook(l) for l in range(shape.n_layers)] + [mlp_hook(l) for l in range(shape.n_layers)]
        with patching(model, ablate):
            self.orig = capture(model, self.tokens, hooks)
            self.new = capture(model, corrupt_BT.to(self.device), hooks)

    def run(self, extra: dict[str, Edit], hooks: list[str] = ()) -> tuple[float, dict[str, torch.Tensor]]:
        """The summed LD of a clean run of the circuit with ``extra`` edits, and the activations at
        ``hooks`` in that run."""
        edits = dict(self.ablate)
        for name, e in extra.items():
            edits[name] = _then(edits.get(name), e)
        with patching(self.model, edits):
            got = capture(self.model, self.tokens, list(hooks), logits=True)
        last = got.pop("logits")[:, -1].float()
        ld = logit_diff(last, self.answer.to(last.device), self.distractor.to(last.device))
        return float(ld.sum()), got


def paper_edges(model, task: TaskSet, nodes: list[str], ratio: float = PAPER_RATIO, batch: int = 128,
                on_progress: Progress | None = None) -> CircuitGraph:
    """Score every edge between ``nodes`` the authors' way and keep those under ``ratio`` (module
    doc). Scores are LD(patched circuit) - LD(full model), so ratio = 1 + score / ld_clean."""
    if not 0 < ratio < 1:
        raise CircuitError(f"ratio={ratio}: keep an edge when the patched LD falls under this fraction of the "
                           "model's, between 0 and 1 (0.8, the authors')")
    shape = ModelShape.of(model)
    nodes = shape.check(nodes)
    parsed = [parse_node(n) for n in nodes]
    heads = [(l, h) for l, h in parsed if h is not None]
    mlps = sorted(l for l, h in parsed if h is None)
    if not nodes:
        raise CircuitError("the circuit has no components: there are no edges between them to score")
    ablate = ablation_edits(shape, paper_means(model, task.corrupt_BT, shape, nodes), nodes)
    full = _full_ld(model, task, batch)
    sums: dict[str, float] = {}
    n = len(task)
    chunks = list(range(0, n, batch))
    for c, start in enumerate(chunks):
        rows = slice(start, start + batch)
        b = _Batch(model, shape, ablate, task.clean_BT[rows], task.corrupt_BT[rows], task.answer_B[rows],
                   task.distractor_B[rows])
        senders = [("head", s) for s in heads] + [("mlp", (l, None)) for l in mlps]
        for i, (kind, (layer, head)) in enumerate(senders):
            if on_progress:
                on_progress(c * len(senders) + i, len(chunks) * len(senders),
                            f"the authors' path patching: sender {f'a{layer}.h{head}' if head is not None else f'm{layer}'}")
            found = (_head_sender(b, heads, mlps, layer, head) if kind == "head"
                     else _mlp_sender(b, heads, mlps, layer))
            for name, ld in found.items():
                sums[name] = sums.get(name, 0.0) + ld
    scores = {name: s / n - full for name, s in sums.items()}
    ratios = {name: 1 + s / full for name, s in scores.items()}
    keep = frozenset(name for name, r in ratios.items() if r < ratio and r != 0.0)
    circuit_ld = _circuit_ld(model, task, ablate, batch)
    return CircuitGraph(GraphConfig.of(model), scores, keep, meta={
        "task": task.cfg.task, "template": task.cfg.template, "method": "paper", "baseline": "corrupt",
        "ld_clean": full, "n_prompts": n, "ratio": ratio, "circuit_ratio": circuit_ld / full, "quirks": list(QUIRKS)})


def _head_sender(b: _Batch, heads, mlps, layer: int, head: int) -> dict[str, float]:
    """Every edge out of head ``(layer, head)``: every head frozen to its clean value but the
    sender, set to its corrupted one (``patch_head_vectors``); the receivers' inputs read there."""
    frozen = {z_hook(l): _replace(b.orig[z_hook(l)]) for l in range(b.shape.n_layers)}
    frozen[z_hook(layer)] = _then(frozen[z_hook(layer)], head_to(b.new[z_hook(layer)], head))
    later_heads = [(l, h) for l, h in heads if l > layer]
    later_mlps = [m for m in mlps if m > layer]
    qkv = [f"blocks.{l}.attn.hook_{c}" for l in sorted({l for l, _ in later_heads}) for c in CHANNELS]
    ld_logits, got = b.run(frozen, qkv + [mlp_hook(m) for m in later_mlps])
    name = f"a{layer}.h{head}"
    out = {f"{name}->logits": ld_logits}
    out.update(_into_heads(b, name, later_heads, got))
    for m in later_mlps:
        out[f"{name}->m{m}"] = b.run({mlp_hook(m): _replace(got[mlp_hook(m)])})[0]
    return out


def _mlp_sender(b: _Batch, heads, mlps, layer: int) -> dict[str, float]:
    """Every edge out of MLP ``layer``, each kind with its own sending run (module doc, quirks)."""
    name = f"m{layer}"
    out = {}
    later_mlps = [m for m in mlps if m > layer]
    if later_mlps:   # circ_path_patch_MLPs_to_MLPs: the sender's output alone
        _, got = b.run({mlp_hook(layer): _replace(b.new[mlp_hook(layer)])}, [mlp_hook(m) for m in later_mlps])
        for m in later_mlps:
            out[f"{name}->m{m}"] = b.run({mlp_hook(m): _replace(got[mlp_hook(m)])})[0]
    later_heads = [(l, h) for l, h in heads if l > layer]
    if later_heads:  # circ_path_patch_mlp_to_head: layer L's hook_z (quirk 1)
        qkv = [f"blocks.{l}.attn.hook_{c}" for l in sorted({l for l, _ in later_heads}) for c in CHANNELS]
        _, got = b.run({z_hook(layer): _replace(b.new[z_hook(layer)])}, qkv)
        out.update(_into_heads(b, name, later_heads, got))
    upto = [m for m in mlps if m <= layer]  # get_path_patch_mlp_to_final_resid_post (quirk 2)
    cumulative = {h: _replace(b.new[h]) for m in upto for h in (z_hook(m), mlp_hook(m))}
    out[f"{name}->logits"] = b.run(cumulative)[0]
    return out


def _into_heads(b: _Batch, sender: str, receivers, got: dict[str, torch.Tensor]) -> dict[str, float]:
    """Second runs: each receiver head's q, k or v alone set to what the sending run gave it (a
    grouped-query k or v: for that query head alone, ``head_io.channel_edits``)."""
    out = {}
    layout = HeadLayout.of(b.model)
    for l, h in receivers:
        for c in CHANNELS:
            new = got[f"blocks.{l}.attn.hook_{c}"][:, :, layout.index(h, c)]
            out[f"{sender}->a{l}.h{h}<{c}>"] = b.run(channel_edits(layout, l, h, c, new, b.orig[z_hook(l)]))[0]
    return out


@torch.no_grad()
def _full_ld(model, task: TaskSet, batch: int) -> float:
    ld = logit_diff(last_logits(model, task.clean_BT, batch=batch), task.answer_B, task.distractor_B).mean()
    if float(ld) <= 0:
        raise CircuitError(f"the full model's mean logit difference is {float(ld):.3g}: the ratio rule needs a "
                           "model that prefers the answer (filter the prompts with make_task)")
    return float(ld)


@torch.no_grad()
def _circuit_ld(model, task: TaskSet, ablate: dict[str, Edit], batch: int) -> float:
    logits = last_logits(model, task.clean_BT, ablate, batch=batch)
    return float(logit_diff(logits, task.answer_B, task.distractor_B).mean())
