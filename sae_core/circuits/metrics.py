"""How well a (partly ablated) model does a task: the paper's logit difference and performance,
and the usual companions (normalised faithfulness, KL to the full model, p(answer)).

All take last-position logits ``[B, V]``. LD = logit(answer) - logit(distractor) per prompt;
performance = 100 * mean LD(circuit) / mean LD(model) (arXiv 2311.04131 averages before dividing).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from sae_core.circuits.tasks import CircuitError


def logit_diff(logits_BV: torch.Tensor, answer_B: torch.Tensor, distractor_B: torch.Tensor) -> torch.Tensor:
    """``[B]``: logit of the answer minus logit of the distractor."""
    rows = torch.arange(logits_BV.shape[0], device=logits_BV.device)
    return logits_BV[rows, answer_B] - logits_BV[rows, distractor_B]


def performance(ld_circuit_B: torch.Tensor, ld_model_B: torch.Tensor) -> float:
    base = float(ld_model_B.mean())
    if base <= 0:
        raise CircuitError(f"the full model's mean logit difference is {base:.3g}: it does not prefer the answer, "
                           "so performance relative to it is meaningless (filter the prompts with make_task)")
    return 100.0 * float(ld_circuit_B.mean()) / base


def faithfulness(m_circuit: float, m_model: float, m_empty: float) -> float:
    """(m(C) - m(empty)) / (m(model) - m(empty)): 1 for the full model, 0 for everything ablated."""
    if m_model == m_empty:
        raise CircuitError("the metric is the same with and without every component; faithfulness is undefined")
    return (m_circuit - m_empty) / (m_model - m_empty)


def kl_to_model(model_logits_BV: torch.Tensor, circuit_logits_BV: torch.Tensor) -> float:
    """Mean over prompts of KL(model || circuit) of the next-token distributions."""
    p_log = torch.log_softmax(model_logits_BV.double(), -1)
    q_log = torch.log_softmax(circuit_logits_BV.double(), -1)
    return float((p_log.exp() * (p_log - q_log)).sum(-1).mean())


@dataclass(frozen=True)
class TaskMetrics:
    logit_diff: float       # mean LD of the circuit
    performance: float      # % of the model's mean LD
    kl: float               # to the full model
    p_answer: float         # mean probability of the answer
    top1: float             # fraction of prompts whose top-1 is the answer

    def to_json(self) -> dict:
        return asdict(self)


def evaluate(model_logits_BV: torch.Tensor, circuit_logits_BV: torch.Tensor, answer_B: torch.Tensor,
             distractor_B: torch.Tensor) -> TaskMetrics:
    ld_c = logit_diff(circuit_logits_BV, answer_B, distractor_B)
    ld_m = logit_diff(model_logits_BV, answer_B, distractor_B)
    probs = torch.softmax(circuit_logits_BV.float(), -1)
    rows = torch.arange(probs.shape[0], device=probs.device)
    return TaskMetrics(float(ld_c.mean()), performance(ld_c, ld_m), kl_to_model(model_logits_BV, circuit_logits_BV),
                       float(probs[rows, answer_B].mean()), float((probs.argmax(-1) == answer_B).float().mean()))
