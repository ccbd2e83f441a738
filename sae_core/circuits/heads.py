"""Head analyses of the sequence-continuation paper (arXiv 2311.04131, after Gould et al.'s
successor heads): attention patterns on the task's prompts, and OV "next" / "copy" scores.

OV scores, two readings:
- ``ov_scores`` (this tool's default): each of the sequence's first 12 members alone, its layer-0
  residual from a run on ``BOS member`` (``blocks.0.hook_resid_post`` at the member), through the
  head's layer norm, ``W_V W_O`` (no ``b_V``) and the unembedding (with the final layer norm);
  each member counts once;
- ``ov_scores_paper``: the authors' (``src/OV_scores/OV_score_fns.py``: ``get_next_scores``,
  ``get_copy_scores``): the layer-0 residual of the *task's prompts* at the member positions, every
  (prompt, member) pair counting, through the layer norm, ``W_V`` *plus* ``b_V``, ``W_O``, the final
  norm and the unembedding (with ``b_U``). Their ``blocks[1].attn.ln1`` is a bare normalisation in
  their folded-LN model, whose ``W_V`` / ``b_V`` carry each layer's own norm weights; unfolded, as
  here, that is the head's own layer's ``ln1``. Not reproduced: for months their next score looks
  for the next month's ordinal ("third" after February), and a top token counts with or without
  its leading space; here the next member, as the one token the prompts use.
A member counts towards the head's *next* score when the next member is among the top ``k``
tokens (5 in the paper), towards its *copy* score when the member itself is. The successor ranking
orders heads by next score, ties broken by the mean margin of the next member's logit over the
other members'.
Other layouts: a grouped-query head reads its shared key/value head's ``W_V`` (and ``b_V``, where
the layout has one); Gemma 2's post-attention norm is applied to the head's output as if it wrote
alone, and the final logit soft-capping to the logits (monotone: the top k is unchanged; margins
are in capped logits, as the model's own).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from sae_core.circuits.head_io import HeadLayout
from sae_core.circuits.logit_lens import soft_cap
from sae_core.circuits.tasks import (CORRUPT_POOL, CircuitError, TaskSet, one_token_ids, paper_window,
                                     space_sensitive, split_words)
from sae_core.models.corpus import SEQUENCE_TASKS
from sae_core.models.hooks import capture


def member_positions(model, task: TaskSet) -> list[int]:
    """Positions of the shown members in the task's prompts (all prompts are aligned)."""
    ids = set(one_token_ids(model.tokenizer, task.members).values())
    row = task.clean_BT[0].tolist()
    pos = [i for i, t in enumerate(row) if t in ids]
    if len(pos) != task.cfg.shown:
        raise CircuitError(f"found {len(pos)} members in the first {task.cfg.task} prompt, expected {task.cfg.shown}")
    return pos


@torch.no_grad()
def attention_patterns(model, task: TaskSet, heads: list[tuple[int, int]], prompt: int | None = None
                       ) -> dict[str, torch.Tensor]:
    """``{"a{L}.h{H}": [query, key]}``: one prompt's pattern, or the mean over the task's prompts."""
    layers = sorted({layer for layer, _ in heads})
    tokens = task.clean_BT if prompt is None else task.clean_BT[prompt:prompt + 1]
    got = capture(model, tokens.to(next(model.parameters()).device), [f"blocks.{l}.attn.hook_pattern" for l in layers])
    return {f"a{l}.h{h}": got[f"blocks.{l}.attn.hook_pattern"][:, h].float().mean(0).cpu() for l, h in heads}


@dataclass(frozen=True)
class AttentionSummary:
    head: str
    last_to_last_member: float      # attention from the final position to the last member shown
    member_to_previous: float       # mean attention from each member to the member before it

    def to_json(self) -> dict:
        return asdict(self)


def attention_summary(model, task: TaskSet) -> list[AttentionSummary]:
    """For every head, the two attention scores the paper reads off its patterns."""
    n_l, n_h = model.cfg.n_layers, model.cfg.n_heads
    pats = attention_patterns(model, task, [(l, h) for l in range(n_l) for h in range(n_h)])
    pos = member_positions(model, task)
    out = []
    for name, p in pats.items():
        prev = sum(float(p[b, a]) for a, b in zip(pos, pos[1:])) / (len(pos) - 1)
        out.append(AttentionSummary(name, float(p[-1, pos[-1]]), prev))
    return out


@dataclass(frozen=True)
class OVScore:
    head: str
    next_score: float      # fraction of members whose next member is in the head's top k
    copy_score: float      # fraction whose own token is
    next_margin: float     # mean logit of the next member minus the mean over the other members

    def to_json(self) -> dict:
        return asdict(self)


@torch.no_grad()
def ov_scores(model, task_name: str, k: int = 5, n_members: int = CORRUPT_POOL) -> list[OVScore]:
    """OV next and copy scores of every head, ranked as successor heads (best first)."""
    from sae_core.models.loading import to_tokens

    if k < 1:
        raise CircuitError(f"k={k}: the top-k cut needs k >= 1 (5 in the paper)")
    items, cyclic = SEQUENCE_TASKS[task_name]
    members = list(items[:n_members]) if cyclic else list(items[:min(n_members, len(items) - 1)])
    ids, _ = split_words(model.tokenizer, members + [items[(len(members)) % len(items)]])
    pairs = [(m, items[(i + 1) % len(items)]) for i, m in enumerate(members)]
    pairs = [(m, n) for m, n in pairs if m in ids and n in ids]   # members the tokenizer holds, as tasks.make_task
    if len(pairs) < 2:
        raise CircuitError(f"{task_name}: fewer than 2 of its first {len(members)} members and their next are single "
                           "tokens of this tokenizer; OV scores need them")
    members = [m for m, _ in pairs]
    cur = torch.tensor([ids[m] for m, _ in pairs])
    nxt = torch.tensor([ids[n] for _, n in pairs])
    device = next(model.parameters()).device
    lead = " " if space_sensitive(model.tokenizer) else ""   # the member's token after a space, as in prompts
    tokens = to_tokens(model, [lead + m for m in members])    # [BOS, member] per row
    x = capture(model, tokens.to(device), ["blocks.0.hook_resid_post"])["blocks.0.hook_resid_post"][:, -1]
    return _scores(model, x, cur, nxt, cur, k, bias=False)


def ov_outputs(model, x_MD: torch.Tensor, layer: int, head: int, bias: bool) -> torch.Tensor:
    """``[M, d_model]``: what head ``(layer, head)`` writes for residuals ``x_MD`` through its OV
    circuit, ``(ln1(x) W_V (+ b_V)) W_O``. Under grouped-query attention the head reads its shared
    key/value head's ``W_V`` / ``b_V``; a layout without ``b_V`` (Llama, Gemma) adds nothing with
    ``bias``; Gemma 2's post-attention norm is applied to the head's output as if it wrote alone."""
    attn, block = model.blocks[layer].attn, model.blocks[layer]
    kv = HeadLayout.of(model).index(head, "v")
    v = block.ln1(x_MD) @ attn.W_V[kv]
    if bias and attn.b_V is not None:
        v = v + attn.b_V[kv]
    out = v @ attn.W_O[head]
    return block.ln1_post(out) if hasattr(block, "ln1_post") else out


def _scores(model, x_MD, cur_M, nxt_M, members, k: int, bias: bool) -> list[OVScore]:
    """Scores of every head for residuals ``x_MD`` whose member is ``cur_M`` and next ``nxt_M``;
    the margin is over the token ids ``members``. The authors' unembedding adds ``b_U`` (with
    ``bias``)."""
    rows = torch.arange(len(cur_M))
    b_u = getattr(model, "b_U", None) if bias else None
    scores = []
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            logits = model.ln_final(ov_outputs(model, x_MD, layer, head, bias)) @ model.W_U
            logits = soft_cap(model, logits if b_u is None else logits + b_u).float().cpu()
            top = logits.topk(k, -1).indices
            nxt_in = (top == nxt_M[:, None]).any(-1).float().mean()
            cur_in = (top == cur_M[:, None]).any(-1).float().mean()
            own = logits[rows, nxt_M]                      # the next member's logit
            margin = (own - (logits[:, members].sum(-1) - own) / (len(members) - 1)).mean()
            scores.append(OVScore(f"a{layer}.h{head}", float(nxt_in), float(cur_in), float(margin)))
    return sorted(scores, key=lambda s: (-s.next_score, -s.next_margin))


@torch.no_grad()
def ov_scores_paper(model, task: TaskSet, k: int = 5) -> list[OVScore]:
    """The authors' OV next and copy scores (``OV_score_fns.py``: ``get_next_scores``,
    ``get_copy_scores``; module doc): the layer-0 residual of ``task``'s clean prompts at the
    member positions, with ``b_V``, every (prompt, member) pair counted. Ranked as ``ov_scores``."""
    if k < 1:
        raise CircuitError(f"k={k}: the top-k cut needs k >= 1 (5 in the paper)")
    items, cyclic = SEQUENCE_TASKS[task.cfg.task]
    pos = member_positions(model, task)
    ids, _ = split_words(model.tokenizer, list(items))
    index = {ids[m]: i for i, m in enumerate(items) if m in ids}
    cur = task.clean_BT[:, pos]                                           # [B, P] member ids
    if not cyclic and any(index[t] + 1 >= len(items) for t in cur.flatten().tolist()):
        raise CircuitError(f"the prompts show the last member of {task.cfg.task}, which has no next member")
    if missing := {items[(index[t] + 1) % len(items)] for t in cur.flatten().tolist()} - set(ids):
        raise CircuitError(f"the next members {sorted(missing)} of {task.cfg.task} are not single tokens of this "
                           "tokenizer")
    nxt = torch.tensor([[ids[items[(index[t] + 1) % len(items)]] for t in row] for row in cur.tolist()])
    x = capture(model, task.clean_BT.to(next(model.parameters()).device),
                ["blocks.0.hook_resid_post"])["blocks.0.hook_resid_post"][:, pos]   # [B, P, d]
    window = paper_window(task.cfg.task) if task.cfg.paper else list(items[:CORRUPT_POOL])
    return _scores(model, x.reshape(-1, x.shape[-1]), cur.flatten(), nxt.flatten(),
                   torch.tensor([ids[m] for m in window if m in ids]), k, bias=True)
