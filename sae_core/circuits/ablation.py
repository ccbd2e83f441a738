"""Mean ablation of heads and MLPs, the operation node discovery is built on (arXiv 2311.04131).

A circuit is a set of components, heads ``a{L}.h{H}`` (their ``hook_z``) and MLPs ``m{L}`` (their
``hook_mlp_out``). Running it means running the model with every component *outside* the set
replaced by its mean over a reference set of prompts, per position (the paper: the corrupted
prompts, whose members are random), so that ablation removes the task information and keeps the
rest of the activation's typical shape. ``Evaluator`` turns a component set into the task's
metrics against the full model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import torch

from sae_core.circuits.metrics import TaskMetrics, evaluate, logit_diff, performance
from sae_core.circuits.tasks import CircuitError, TaskSet
from sae_core.models.hooks import Edit, capture, patching

NODE_RE = re.compile(r"^(?:a(\d+)\.h(\d+)|m(\d+))$")
MEANS_FROM = ("corrupt", "clean")


def head_name(layer: int, head: int) -> str:
    return f"a{layer}.h{head}"


def mlp_name(layer: int) -> str:
    return f"m{layer}"


def parse_node(name: str) -> tuple[int, int | None]:
    """``a2.h5`` -> (2, 5); ``m3`` -> (3, None)."""
    hit = NODE_RE.match(name)
    if not hit:
        raise CircuitError(f"{name!r} is not a component name: heads are a{{layer}}.h{{head}} (a0.h3), MLPs "
                           "m{layer} (m1)")
    return (int(hit[1]), int(hit[2])) if hit[1] is not None else (int(hit[3]), None)


def z_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def mlp_hook(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


@dataclass(frozen=True)
class ModelShape:
    """What the graph of a model looks like: layers, heads per layer, and whether attention and
    MLP of a layer read the same residual (GPT-NeoX / Pythia: then a layer's heads do not feed its
    MLP)."""
    n_layers: int
    n_heads: int
    parallel: bool = False

    @classmethod
    def of(cls, model) -> "ModelShape":
        cfg = model.cfg
        parallel = bool(getattr(cfg, "parallel_attn_mlp", False) or getattr(cfg, "use_parallel_residual", False))
        return cls(int(cfg.n_layers), int(cfg.n_heads), parallel)

    def components(self) -> list[str]:
        """Every head and MLP, in layer order (a layer's heads, then its MLP)."""
        return [n for layer in range(self.n_layers)
                for n in [head_name(layer, h) for h in range(self.n_heads)] + [mlp_name(layer)]]

    def heads(self) -> list[str]:
        return [n for n in self.components() if n.startswith("a")]

    def check(self, nodes: Iterable[str]) -> list[str]:
        """``nodes`` as a list, each checked to exist in this model."""
        nodes = list(nodes)
        for name in nodes:
            layer, head = parse_node(name)
            if layer >= self.n_layers or (head is not None and head >= self.n_heads):
                raise CircuitError(f"component {name!r} is not in this model ({self.n_layers} layers x "
                                   f"{self.n_heads} heads: a0.h0 .. a{self.n_layers - 1}.h{self.n_heads - 1}, "
                                   f"m0 .. m{self.n_layers - 1})")
        return nodes


@dataclass(frozen=True)
class Means:
    """Per-position means over a reference set: ``z_LTHE`` of every head's ``hook_z``, ``mlp_LTD``
    of every MLP's output."""
    z_LTHE: torch.Tensor
    mlp_LTD: torch.Tensor
    source: str = "corrupt"

    @property
    def n_positions(self) -> int:
        return self.z_LTHE.shape[1]


@torch.no_grad()
def compute_means(model, tokens_BT: torch.Tensor, shape: ModelShape, source: str = "corrupt",
                  batch: int = 128) -> Means:
    """Means of every head's z and every MLP's output over ``tokens_BT``, per position."""
    device = next(model.parameters()).device
    hooks = [z_hook(layer) for layer in range(shape.n_layers)] + [mlp_hook(layer) for layer in range(shape.n_layers)]
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, tokens_BT.shape[0], batch):
        got = capture(model, tokens_BT[start:start + batch].to(device), hooks)
        for name in hooks:
            part = got[name].double().sum(0)
            sums[name] = part if name not in sums else sums[name] + part
    n = tokens_BT.shape[0]
    z = torch.stack([sums[z_hook(layer)] / n for layer in range(shape.n_layers)]).float()
    mlp = torch.stack([sums[mlp_hook(layer)] / n for layer in range(shape.n_layers)]).float()
    return Means(z, mlp, source)


def ablation_edits(shape: ModelShape, means: Means, keep: Iterable[str]) -> dict[str, Edit]:
    """The ``patching`` edits that replace every component outside ``keep`` by its mean."""
    keep = set(shape.check(keep))
    edits: dict[str, Edit] = {}
    for layer in range(shape.n_layers):
        off = [h for h in range(shape.n_heads) if head_name(layer, h) not in keep]
        if off:
            edits[z_hook(layer)] = _heads_to_mean(means.z_LTHE[layer], off)
        if mlp_name(layer) not in keep:
            edits[mlp_hook(layer)] = _to_mean(means.mlp_LTD[layer])
    return edits


def _heads_to_mean(mean_THE: torch.Tensor, heads: list[int]) -> Edit:
    idx = torch.tensor(heads)

    def edit(acts_BTHE: torch.Tensor) -> torch.Tensor:
        out = acts_BTHE.clone()
        out[:, :, idx] = mean_THE[:, idx].to(out)
        return out
    return edit


def _to_mean(mean_TD: torch.Tensor) -> Edit:
    return lambda acts_BTD: mean_TD.to(acts_BTD).expand_as(acts_BTD).clone()


@torch.no_grad()
def last_logits(model, tokens_BT: torch.Tensor, edits: dict[str, Edit] | None = None, batch: int = 128) -> torch.Tensor:
    """``[B, V]``: the logits at the last position with ``edits`` applied (none: the full model)."""
    device = next(model.parameters()).device
    outs = []
    with patching(model, edits or {}):
        for start in range(0, tokens_BT.shape[0], batch):
            outs.append(model(tokens_BT[start:start + batch].to(device))[:, -1].float().cpu())
    return torch.cat(outs)


class Evaluator:
    """A task's metrics for any component set: the full model's logits once, then one ablated
    forward pass per set asked for. ``means`` default to the task's corrupted prompts."""

    def __init__(self, model, task: TaskSet, means: Means | None = None, means_from: str = "corrupt"):
        if means_from not in MEANS_FROM:
            raise CircuitError(f"means_from={means_from!r}: choose one of {', '.join(MEANS_FROM)}")
        self.model, self.task = model, task
        self.shape = ModelShape.of(model)
        ref = task.corrupt_BT if means_from == "corrupt" else task.clean_BT
        self.means = means or compute_means(model, ref, self.shape, means_from)
        if self.means.n_positions != task.clean_BT.shape[1]:
            raise CircuitError(f"the means cover {self.means.n_positions} positions but the prompts have "
                               f"{task.clean_BT.shape[1]}; compute means on prompts of this task")
        self.full_logits = last_logits(model, task.clean_BT)
        self.ld_model = logit_diff(self.full_logits, task.answer_B, task.distractor_B)
        self.calls = 0

    def logits(self, keep: Iterable[str]) -> torch.Tensor:
        self.calls += 1
        return last_logits(self.model, self.task.clean_BT, ablation_edits(self.shape, self.means, keep))

    def performance(self, keep: Iterable[str]) -> float:
        ld = logit_diff(self.logits(keep), self.task.answer_B, self.task.distractor_B)
        return performance(ld, self.ld_model)

    def metrics(self, keep: Iterable[str]) -> TaskMetrics:
        return evaluate(self.full_logits, self.logits(keep), self.task.answer_B, self.task.distractor_B)
