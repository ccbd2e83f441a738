"""Beyond the paper: which SAE features inside a circuit carry the task.

For an SAE at a hook a component writes to (its layer's residual stream after the block, the MLP's
output, the layer's attention ``hook_z``), the SAE's codes ``z`` of the clean prompts are spliced
into the model as ``decode(z) + error`` (the reconstruction error kept, so the model's output is
unchanged) and the task metric (mean logit difference) is differentiated with respect to ``z``.
A feature's attribution is ``sum z * dM/dz`` over the prompts' positions (BOS excluded): about how
much the logit difference would lose if the feature were switched off.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from sae_core.circuits.ablation import parse_node
from sae_core.circuits.metrics import logit_diff
from sae_core.circuits.tasks import CircuitError, TaskSet
from sae_core.models.hooks import patching


def hooks_for(node: str) -> list[str]:
    """The hooks whose SAEs describe what ``node`` writes: its layer's residual stream after the
    block, and the MLP's output (an MLP) or the layer's attention ``hook_z`` (a head)."""
    if node == "logits":
        return []
    layer, head = parse_node(node)
    own = f"blocks.{layer}.attn.hook_z" if head is not None else f"blocks.{layer}.hook_mlp_out"
    return [own, f"blocks.{layer}.hook_resid_post"]


@dataclass(frozen=True)
class FeatureAttribution:
    feature: int
    score: float        # sum over positions of z * dM/dz (LD units)
    fires: int          # positions (of all prompts, BOS excluded) where the feature is active
    mean_act: float     # its mean activation where active

    def to_json(self) -> dict:
        return asdict(self)


def spliced_metric(model, task: TaskSet, sae, hook: str, scale_S: torch.Tensor | None = None,
                   grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean LD, z [B*T, d_sae])`` with the SAE spliced at ``hook`` as ``decode(z) + error``
    (the error from the unscaled codes, so the model's output is the clean one when ``scale_S`` is
    None); ``scale_S`` multiplies each feature's codes (``[d_sae]``, or ``[B*T, d_sae]`` per position)."""
    device = next(model.parameters()).device
    held: dict[str, torch.Tensor] = {}

    def splice(acts: torch.Tensor) -> torch.Tensor:
        flat = acts.reshape(*acts.shape[:2], -1)
        if flat.shape[-1] != sae.cfg.d_in:
            raise CircuitError(f"the SAE reads {sae.cfg.d_in} dimensions but {hook} has {flat.shape[-1]}; choose an "
                               "SAE trained at this hook of this model")
        x = flat.detach().reshape(-1, flat.shape[-1]).to(sae.W_dec.dtype)
        with torch.no_grad():
            z = sae.encode(x)
            err = x - sae.decode(z)
            if scale_S is not None:
                z = z * scale_S.to(z)
        held["z"] = z.requires_grad_(grad)
        return (sae.decode(held["z"]) + err).to(acts.dtype).reshape(acts.shape)

    with (torch.enable_grad() if grad else torch.no_grad()), patching(model, {hook: splice}):
        logits = model(task.clean_BT.to(device))[:, -1]
        value = logit_diff(logits, task.answer_B.to(device), task.distractor_B.to(device)).mean()
    return value, held["z"]


def feature_attributions(model, task: TaskSet, sae, hook: str, top: int = 10) -> list[FeatureAttribution]:
    """The ``top`` features of ``sae`` (at ``hook``) by |attribution| to the task's logit difference."""
    value, z = spliced_metric(model, task, sae, hook)
    (g,) = torch.autograd.grad(value, z)
    keep = (task.clean_BT.reshape(-1, 1) != model.tokenizer.bos_token_id).to(z.device)
    z, g = z.detach() * keep, g * keep
    scores = (z * g).sum(0).cpu()
    active = (z > 0).sum(0).cpu()
    mean_act = z.sum(0).cpu() / active.clamp(min=1)
    order = scores.abs().argsort(descending=True)[:top]
    return [FeatureAttribution(int(f), float(scores[f]), int(active[f]), float(mean_act[f]))
            for f in order.tolist() if active[f] > 0]
