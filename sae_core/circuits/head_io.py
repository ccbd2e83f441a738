"""How an edge leaves and enters an attention head, on every layout the bridge boots: GPT-NeoX
(parallel residual, LayerNorm), GPT-2 (sequential residual, LayerNorm, joint qkv), Llama and Qwen2
(RMSNorm, rotary, grouped-query attention; Qwen2 with q/k/v biases) and Gemma 2 (pre- and
post-norms, attention and final logit soft-capping, grouped-query attention). ``edges.py`` scores
edges with these pieces and ``edge_pruning.py`` reuses the receiver rule; nothing here asks the
user to reshape the model first (no "ungrouping" of GQA, no folded norms).

**Senders.** A head's output is what it adds to the residual stream. Where the attention output
enters the residual as it is (every layout but Gemma 2) that is ``z_h W_O[h]``, linear in the head's
``hook_z``, and the change when the head takes its baseline is ``(z'_h - z_h) W_O[h]``. Gemma 2 puts
the layer's attention output through a norm (``ln1_post``) before adding it (its ``hook_attn_out``
is after that norm), so the write ``post(sum_h z_h W_O[h])`` is not a sum of per-head terms: a
head's change is defined as the change of the whole write when that head *alone* takes its
baseline, ``post(A + (z'_h - z_h) W_O[h]) - post(A)`` (``head_deltas``): exactly what patching that
one head at ``hook_z`` does to the residual stream. The changes of several heads do not add up to
the change of patching them together (the norm rescales); EAP, linear, stays the small-step limit
of exact patching edge by edge. MLP outputs are read at ``hook_mlp_out``, the residual write on
every layout (Gemma 2's alias is after ``ln2_post``).

**Receivers: q, k and v of each query head.** Under grouped-query attention (Llama, Qwen2, Gemma
2) k and v are computed once per key/value head ``g`` and read by the ``r = n_heads / n_kv_heads``
query heads ``g r .. g r + r - 1`` (``repeat_kv``'s order). The edge ``s -> a{L}.h{h}<k>`` is the
sender's effect through *query head h's use* of its shared key, so every head keeps its three
receivers and the edge set is the one without GQA (what EAP-IG lists for the ungrouped model); the
r edges into one shared key add up (EAP exactly, exact patching to first order) to the sender's
effect through that key, so the shared head is attributed once, nothing counted twice. Not one
receiver per kv head: that would merge query heads that use the same key or value to opposite
ends (tests/circuits/planted_llama.py: one shared value, helping the task through the successor
head and hurting it through the copy head).
- exact patching (``channel_edits``): the shared head's k or v is recomputed from the patched
  residual (every query head of the group sees it) and the group's other query heads get their
  clean ``hook_z`` back in the same pass: only head h's output changes. One forward pass per edge.
- EAP (``split_kv_grads``): the gradient at ``hook_k`` / ``hook_v`` is the group's sum; head h's
  share is the vector-Jacobian product of its own attention scores (``hook_attn_scores``, per query
  head, after soft-capping and the mask) back to ``hook_k``, and of its own ``hook_z`` back to
  ``hook_v``, taken through the bridge's own rotary and softmax code (nothing re-implemented).

**Pull-back through the pre-norm** (``pull_back``, ``project``): a head reads the residual through
its layer's ``ln1`` (LayerNorm, RMSNorm, Gemma's ``(1 + w)`` RMSNorm: the bridge's own module, so
the Jacobian is the norm's, centring or not) and then ``W_Q[h]``, ``W_K[g]``, ``W_V[g]`` (+ biases,
Qwen2's and GPT-2's). Soft-capping sits after ``hook_q`` / ``hook_k`` (attention) and after the
unembedding (final): inside the forward passes exact patching runs and the backward pass EAP
differentiates, so nothing is done by hand for it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sae_core.circuits.graph import CHANNELS
from sae_core.circuits.tasks import CircuitError
from sae_core.models.hooks import Edit, capture, patching


@dataclass(frozen=True)
class HeadLayout:
    """The attention shape edges need: query heads, key/value heads, and whether the attention
    output passes a norm before the residual (Gemma 2's ``ln1_post``)."""
    n_heads: int
    n_kv_heads: int
    post_norm: bool = False

    def __post_init__(self):
        if self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads:
            raise CircuitError(f"{self.n_heads} query heads cannot share {self.n_kv_heads} key/value heads evenly")

    @classmethod
    def of(cls, model) -> "HeadLayout":
        n_heads = int(model.cfg.n_heads)
        n_kv = getattr(model.cfg, "n_key_value_heads", None) or n_heads
        return cls(n_heads, int(n_kv), hasattr(model.blocks[0], "ln1_post"))

    @property
    def group(self) -> int:
        """Query heads per key/value head (1 without GQA)."""
        return self.n_heads // self.n_kv_heads

    def index(self, head: int, channel: str) -> int:
        """Which head of ``hook_{channel}`` query head ``head`` reads (its kv head for k and v)."""
        return head if channel == "q" else head // self.group

    def siblings(self, head: int) -> list[int]:
        """The other query heads that read ``head``'s key/value head."""
        g = head // self.group
        return [h for h in range(g * self.group, (g + 1) * self.group) if h != head]


def _qkv(attn, channel: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    return {"q": (attn.W_Q, attn.b_Q), "k": (attn.W_K, attn.b_K), "v": (attn.W_V, attn.b_V)}[channel]


@torch.no_grad()
def head_deltas(model, layer: int, layout: HeadLayout, z_BTHE: torch.Tensor, z_base_BTHE: torch.Tensor
                ) -> torch.Tensor:
    """``[B, T, H, D]``: the change of layer ``layer``'s attention write to the residual stream when
    each head alone moves from ``z`` to its baseline (module doc: linear, or through Gemma 2's
    post-norm)."""
    attn = model.blocks[layer].attn
    W_O = attn.W_O
    per_head = torch.einsum("bthe,hed->bthd", (z_base_BTHE - z_BTHE).to(W_O), W_O)
    if not layout.post_norm:
        return per_head
    b_O = attn.b_O
    out_BTD = torch.einsum("bthe,hed->btd", z_BTHE.to(W_O), W_O) + (b_O if b_O is not None else 0)
    post = model.blocks[layer].ln1_post
    return post(out_BTD[:, :, None] + per_head) - post(out_BTD)[:, :, None]


@torch.no_grad()
def project(model, layer: int, channel: str, head: int, x_BTD: torch.Tensor) -> torch.Tensor:
    """``[B, T, E]``: ``hook_{channel}`` of head ``head`` of that hook (a kv head for k and v)
    computed from the residual ``x``: ``ln1(x) W[head] + b[head]``."""
    W, b = _qkv(model.blocks[layer].attn, channel)
    out = model.blocks[layer].ln1(x_BTD.to(W)) @ W[head]
    return out + b[head] if b is not None else out


def channel_edits(layout: HeadLayout, layer: int, head: int, channel: str, new_BTE: torch.Tensor,
                  z_clean_BTHE: torch.Tensor | None) -> dict[str, Edit]:
    """The ``patching`` edits that make query head ``head`` alone read ``new`` as its q, k or v:
    the slice of ``hook_{channel}`` it reads set to ``new``, and, for a shared k or v, its
    siblings' ``hook_z`` set back to ``z_clean`` (the values of the same run without the edit)."""
    idx = layout.index(head, channel)

    def set_channel(a):
        out = a.clone()
        out[:, :, idx] = new_BTE.to(out)
        return out

    edits = {f"blocks.{layer}.attn.hook_{channel}": set_channel}
    if (sibs := layout.siblings(head)) and channel != "q":
        if z_clean_BTHE is None:
            raise CircuitError("a shared k or v patch needs the clean hook_z of the layer to restore the other heads")
        idx_sibs = torch.tensor(sibs)

        def restore(a):
            out = a.clone()
            out[:, :, idx_sibs] = z_clean_BTHE[:, :, idx_sibs].to(out)
            return out
        edits[f"blocks.{layer}.attn.hook_z"] = restore
    return edits


def split_kv_grads(model, layout: HeadLayout, tokens_BT: torch.Tensor, edits: dict[str, Edit],
                   grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-query-head gradients at k and v (``{hook_k / hook_v name: [B, T, H, E]}``) from the
    gradients of a pass over ``tokens_BT`` (with ``edits``) at every layer's ``hook_attn_scores``
    and ``hook_z`` (module doc). One more forward pass, stopped after the last ``hook_z``, and r
    vector-Jacobian products per layer and channel."""
    n_l, r = int(model.cfg.n_layers), layout.group
    kv = [f"blocks.{l}.attn.hook_{c}" for l in range(n_l) for c in ("k", "v")]
    probes: dict[str, torch.Tensor] = {}

    def prober(name: str) -> Edit:
        def probe(a):
            probes[name] = torch.zeros_like(a, requires_grad=True)
            return a + probes[name]
        return probe

    reads = [f"blocks.{l}.attn.hook_{n}" for l in range(n_l) for n in ("attn_scores", "z")]
    with torch.enable_grad(), patching(model, {**edits, **{n: prober(n) for n in kv}}):
        live = capture(model, tokens_BT, reads, grad=True)
    out = {}
    for l in range(n_l):
        scores, z = live[f"blocks.{l}.attn.hook_attn_scores"], live[f"blocks.{l}.attn.hook_z"]
        g_scores, g_z = grads[f"blocks.{l}.attn.hook_attn_scores"], grads[f"blocks.{l}.attn.hook_z"]
        p_k, p_v = probes[f"blocks.{l}.attn.hook_k"], probes[f"blocks.{l}.attn.hook_v"]
        k_BTHE = p_k.new_zeros(*p_k.shape[:2], layout.n_heads, p_k.shape[-1])
        v_BTHE = torch.zeros_like(k_BTHE)
        for j in range(r):  # one query head of every group at a time: head g r + j reads kv head g
            heads = torch.arange(j, layout.n_heads, r, device=scores.device)
            m_scores, m_z = torch.zeros_like(g_scores), torch.zeros_like(g_z)
            m_scores[:, heads], m_z[:, :, heads] = g_scores[:, heads], g_z[:, :, heads]
            (gk,) = torch.autograd.grad(scores, p_k, m_scores, retain_graph=True)
            (gv,) = torch.autograd.grad(z, p_v, m_z, retain_graph=True)
            k_BTHE[:, :, heads], v_BTHE[:, :, heads] = gk, gv
        out[f"blocks.{l}.attn.hook_k"], out[f"blocks.{l}.attn.hook_v"] = k_BTHE, v_BTHE
    return out


def pull_back(model, layer: int, layout: HeadLayout, x_BTD: torch.Tensor, grads: dict[str, torch.Tensor]
              ) -> torch.Tensor:
    """``[B, T, 3, H, D]``: the gradient at the residual ``x`` (``ln1.hook_in``) of each query
    head's q, k and v (``grads[c]``: ``[B, T, H, E]`` per query head), through ``ln1`` and that
    head's ``W_Q`` / ``W_K`` / ``W_V`` (a kv head's, shared). One vector-Jacobian product for all."""
    attn, ln1 = model.blocks[layer].attn, model.blocks[layer].ln1
    n_h = layout.n_heads
    Ws = [_qkv(attn, c)[0] for c in CHANNELS]
    Ws = [W if W.shape[0] == n_h else W.repeat_interleave(layout.group, 0) for W in Ws]
    B, T, D = x_BTD.shape
    x_rep = x_BTD[:, :, None].expand(B, T, 3 * n_h, D).clone().requires_grad_(True)
    with torch.enable_grad():
        y = ln1(x_rep).view(B, T, 3, n_h, D)
        proj = [torch.einsum("bthd,hde->bthe", y[:, :, i], W) for i, W in enumerate(Ws)]
        (g_x,) = torch.autograd.grad(proj, x_rep, [grads[c].to(p) for c, p in zip(CHANNELS, proj)])
    return g_x.view(B, T, 3, n_h, D)
