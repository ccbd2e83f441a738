"""The logit lens on a task's clean prompts: the residual stream at the last position, after the
embedding and after each block, read through the unembedding (issue #29; arXiv 2311.04131's
``src/logit_lens/logit_lens_fns.py``, ``actvs_to_logits``).

Two readings (``LENS_MODES``):
- ``final_norm`` (this tool's default, the usual logit lens): every state through the model's
  final norm, then ``W_U`` and ``b_U``, and the final logit soft-capping where the model has one
  (Gemma 2: ``cap * tanh(logits / cap)``), as the model reads its last state;
- ``paper``: the authors' computation. Their ``hidden_states`` come from ``transformers``, whose
  last entry is already through the final norm: they unembed every state with the head's weight
  alone (no norm, no bias) and apply the final norm once more to the last, so the last state is
  normed twice. The middle states are read without a norm, at their own scale.

Per row (``embed``, then each block): the mean probability of the answer, the share of prompts
whose top token is the answer, the answer's mean rank (0 = top), and the top five tokens of the
first prompt (what the authors print).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from sae_core.circuits.tasks import CircuitError, TaskSet
from sae_core.models.hooks import capture

LENS_MODES = ("final_norm", "paper")


@dataclass(frozen=True)
class LensRow:
    state: str                 # "embed" or "block L"
    hook: str
    p_answer: float
    top1: float
    mean_rank: float
    top5_first: list[str]

    def to_json(self) -> dict:
        return asdict(self)


def soft_cap(model, logits_BV: torch.Tensor) -> torch.Tensor:
    """The model's final logit soft-capping (Gemma 2's ``cap * tanh(logits / cap)``), or the logits
    as they are when it has none (``cfg.output_logits_soft_cap`` <= 0 or absent)."""
    cap = float(getattr(model.cfg, "output_logits_soft_cap", 0.0) or 0.0)
    return cap * torch.tanh(logits_BV / cap) if cap > 0 else logits_BV


def _final_norm(model):
    norm = getattr(model, "ln_final", None)
    if norm is None:
        raise CircuitError("this model has no final norm (ln_final) the logit lens can read through")
    return getattr(norm, "_original_component", norm)


@torch.no_grad()
def logit_lens(model, task: TaskSet, mode: str = "final_norm") -> list[LensRow]:
    """The lens rows of ``task``'s clean prompts under ``mode`` (module doc)."""
    if mode not in LENS_MODES:
        raise CircuitError(f"logit lens mode {mode!r}: choose one of {', '.join(LENS_MODES)}")
    n = model.cfg.n_layers
    hooks = ["blocks.0.hook_resid_pre"] + [f"blocks.{L}.hook_resid_post" for L in range(n)]
    device = next(model.parameters()).device
    got = capture(model, task.clean_BT.to(device), hooks)
    norm, W_U = _final_norm(model), model.W_U
    b_U = getattr(model, "b_U", None)
    answer_B = task.answer_B.to(device)
    rows = []
    for i, hook in enumerate(hooks):
        h_BD = got[hook][:, -1].to(W_U.dtype)
        if mode == "final_norm":
            logits_BV = soft_cap(model, norm(h_BD) @ W_U + (b_U if b_U is not None else 0))
        else:  # the authors': raw states, the last one normed twice (module doc)
            logits_BV = (norm(norm(h_BD)) if i == len(hooks) - 1 else h_BD) @ W_U
        probs_BV = torch.softmax(logits_BV.double(), -1)
        p_B = probs_BV.gather(1, answer_B[:, None])[:, 0]
        rank_B = (probs_BV > p_B[:, None]).sum(-1)
        top5 = probs_BV[0].topk(5).indices.tolist()
        rows.append(LensRow("embed" if i == 0 else f"block {i - 1}", hook, float(p_B.mean()),
                            float((rank_B == 0).double().mean()), float(rank_B.double().mean()),
                            [model.tokenizer.decode([t]) for t in top5]))
    return rows
