"""Side-by-side generations of one prompt under the study's interventions (the page's columns).

``side_by_side(study, models, prompt, ...)`` generates greedily with the KV cache, per column:
base model, fine-tuned, and the fine-tuned model with each enabled intervention (the switch, the
native, transferred and random vectors at ``alpha``), and records where each intervention fired
and the norm it changed there, per token (``Column.fired``), for the overlay. The prompt goes through
``read_prompt``: an empty one is an error, and a column holds only the prompt tokens the model read.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from sae_core.models.generation import Prompt, generate, read_prompt
from sae_core.models.tokens import display_tokens
from sae_core.steering.interventions import Intervention, intervene
from sae_core.steering.study import Study, trigger_positions, vector_intervention
from sae_core.steering.switches import switch_intervention

INTERVENTIONS = ("switch", "native", "transferred", "random")
GATED = "fine-tuned + gated switch"
LABELS = {"switch": "fine-tuned + switch", "native": "fine-tuned + native vector",
          "transferred": "fine-tuned + transferred vector", "random": "fine-tuned + random control"}


@dataclass(frozen=True)
class Column:
    label: str
    tokens: list[str]        # prompt as read and continuation, one string per token (BOS left out)
    n_prompt: int            # how many of ``tokens`` are the prompt (those the model read)
    fired: list[float]       # per token: the norm the intervention changed there (0: did not fire)
    text: str                # the continuation alone
    spaced: bool = True      # tokens shown with spaces between (word-level; ``models.tokens``)

    @property
    def fired_anywhere(self) -> bool:
        return any(f > 0 for f in self.fired)


def study_interventions(study: Study, tokenizer, alpha: float) -> dict[str, Intervention]:
    """The four interventions of a study, by name."""
    trig = trigger_positions(tokenizer, study.trigger)
    out = {"switch": switch_intervention(study.mapper("switch"), study.config["target_model"])}
    for name in ("native", "transferred", "random"):
        out[name] = vector_intervention(study.vector(name), alpha, trig, name)
    return out


def _columns(model, labels: list[str], ids_1T: torch.Tensor, n_tokens: int,
             specs: list[list[Intervention]]) -> list[Column]:
    """One batched generation of the prompt, row i under ``specs[i]`` (each spec limited to its row)."""
    rowed = [dataclasses.replace(spec, rows=(i,)) for i, row in enumerate(specs) for spec in row]
    with intervene(model, rowed, record=True) as rec:
        out = generate(model, ids_1T.expand(len(labels), -1), n_tokens)
    tok, length, n_prompt = model.tokenizer, out.shape[1], ids_1T.shape[1]
    cols = []
    for i, label in enumerate(labels):
        norms = torch.zeros(length)
        for spec in specs[i]:
            norms = torch.maximum(norms, rec.norms(spec.label, len(labels), length)[i])
        ids = out[i].tolist()
        shown, spaced = display_tokens(tok, ids[1:])
        cols.append(Column(label, shown, n_prompt - 1, norms[1:].tolist(),
                           tok.decode(ids[n_prompt:], skip_special_tokens=True), spaced))
    return cols


@torch.no_grad()
def plain_columns(base, fine_tuned, prompt: str, n_tokens: int = 20) -> list[Column]:
    """The base and the fine-tuned model's generations (no intervention)."""
    ids = read_prompt(fine_tuned, prompt).ids_1T
    return (_columns(base, ["base model"], ids.to(next(base.parameters()).device), n_tokens, [[]])
            + _columns(fine_tuned, ["fine-tuned"], ids, n_tokens, [[]]))


@torch.no_grad()
def steered_columns(study: Study, fine_tuned, prompt: str, *, n_tokens: int = 20, alpha: float = -1.0,
                    enabled: tuple[str, ...] = INTERVENTIONS) -> list[Column]:
    """The fine-tuned model's generation under each enabled intervention, in ``INTERVENTIONS`` order
    (one batched generation: row i carries the i-th enabled intervention alone)."""
    names = [n for n in INTERVENTIONS if n in enabled]
    if not names:
        return []
    ids = read_prompt(fine_tuned, prompt).ids_1T
    specs = study_interventions(study, fine_tuned.tokenizer, alpha)
    return _columns(fine_tuned, [LABELS[n] for n in names], ids, n_tokens, [[specs[n]] for n in names])


@torch.no_grad()
def gated_column(gated_switch: Intervention, fine_tuned, prompt: str, n_tokens: int = 20) -> Column:
    """The fine-tuned model's generation under a gated switch (``gated_switch.GateResults.intervention``):
    its shading shows where the gate let the switch act (nowhere: ``Column.fired_anywhere`` is False)."""
    ids = read_prompt(fine_tuned, prompt).ids_1T
    return _columns(fine_tuned, [GATED], ids, n_tokens, [[gated_switch]])[0]


def side_by_side(study: Study, base, fine_tuned, prompt: str, *, n_tokens: int = 20, alpha: float = -1.0,
                 enabled: tuple[str, ...] = INTERVENTIONS) -> tuple[list[Column], Prompt]:
    """(columns, the prompt as the models read it: its unknown words, how much of it they read);
    see module doc."""
    read = read_prompt(fine_tuned, prompt)
    cols = plain_columns(base, fine_tuned, prompt, n_tokens)
    cols += steered_columns(study, fine_tuned, prompt, n_tokens=n_tokens, alpha=alpha, enabled=enabled)
    return cols, read
