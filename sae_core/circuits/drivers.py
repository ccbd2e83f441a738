"""What drives a feature: which heads, MLPs and input positions make an SAE feature fire.

The metric is the feature's activation at each prompt's last position, summed over the prompts
(the feature browser's prompts are its top contexts, each cut at its peak). The attribution of a
component c (a head ``a{L}.h{H}`` through its ``hook_z``, an MLP ``m{L}`` through its
``hook_mlp_out``) is the circuits code's first-order estimate (``circuits.edges``): gradient x
activation difference against the mean-ablation baseline,

    attr(c) = sum over prompts and positions of  dm/dc(b, t) . (c(b, t) - mean(c)),

which estimates m(clean) - m(c mean-ablated). The mean is c's output averaged over every kept
position of the prompts (not per position as in the circuit tasks, whose prompts share one
length: a feature's contexts do not); the BOS position is never ablated (its outputs, an
attention sink's, are far from every mean). Input positions get the same estimate through the
token embeddings (``hook_embed``) against the mean embedding: which tokens of each context drive it.

Validation (``validate``): the top components by |attribution| are each mean-ablated exactly (one
forward pass each) and the Spearman correlation of attribution and exact effect is reported.
Components are those upstream of the SAE's hook: layers up to and including its block for
``hook_resid_post`` (and ``hook_resid_mid``'s heads), before it for ``hook_resid_pre``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from scipy.stats import spearmanr

from sae_core.circuits.ablation import head_name, mlp_hook, mlp_name, z_hook
from sae_core.circuits.tasks import CircuitError
from sae_core.models.hooks import capture, gradients, patching
from sae_core.models.loading import check_hook, hook_layer, keep_mask_BT, to_tokens
from sae_core.models.tokens import display_tokens
from sae_core.sae.base import SAE

EMBED = "hook_embed"


@dataclass(frozen=True)
class Component:
    node: str                    # a{L}.h{H} or m{L}
    attribution: float           # estimated m(clean) - m(ablated)
    exact: float | None = None   # measured m(clean) - m(ablated), for the validated top ones


@dataclass(frozen=True)
class Drivers:
    feature: int
    hook: str
    n_prompts: int
    metric: float                       # the summed activation at the prompts' last positions
    components: list[Component]         # by |attribution|, largest first
    spearman: float | None              # attribution against exact ablation over the validated ones
    n_validated: int
    tokens: list[list[str]]             # per prompt, its tokens as shown (BOS left out)
    positions: list[list[float]]        # per prompt and token: the input attribution
    spaced: bool = True

    def to_json(self) -> dict:
        return asdict(self)


def upstream(model, hook: str) -> list[str]:
    """The components that write into the residual stream before ``hook`` reads it."""
    layer = hook_layer(hook)
    if layer is None or not any(hook.endswith(s) for s in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")):
        raise CircuitError(f"what drives a feature is found for SAEs of the residual stream (blocks.L.hook_resid_pre, "
                           f"_mid or _post); this SAE reads {hook}")
    n_heads = model.cfg.n_heads
    below = range(layer if hook.endswith("hook_resid_pre") else layer + 1)
    nodes = [head_name(L, h) for L in below for h in range(n_heads)] + [mlp_name(L) for L in below]
    if hook.endswith("hook_resid_mid"):  # the block's heads are upstream, its MLP is not
        nodes.remove(mlp_name(layer))
    return nodes


def _hook_of(node: str) -> str:
    layer = int(node[1:].split(".")[0])
    return z_hook(layer) if node.startswith("a") else mlp_hook(layer)


def _prompt_ids(model, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(right-padded ids [B, T], kept positions [B, T] (BOS, specials, padding out), each row's last index)."""
    if not prompts or not all(p.strip() for p in prompts):
        raise CircuitError("give one or more non-empty prompts to find what drives the feature")
    tok = model.tokenizer
    ids = to_tokens(model, prompts).to(next(model.parameters()).device)
    keep = keep_mask_BT(ids, tok.pad_token_id, sorted(set(getattr(tok, "all_special_ids", []) or [])), True)
    real = keep_mask_BT(ids, tok.pad_token_id, [], False)
    last = real.long().cumsum(1).argmax(1)  # the last real position of each row
    return ids, keep, last


def _means(acts: dict[str, torch.Tensor], keep_BT: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each hook's mean over the kept positions (``hook_z``: per head)."""
    return {h: a[keep_BT].double().mean(0).float() for h, a in acts.items()}


def feature_drivers(model, sae: SAE, hook: str, feature: int, prompts: list[str], validate: int = 20) -> Drivers:
    """What drives ``feature`` on ``prompts`` (module doc); the top ``validate`` components ablated exactly."""
    check_hook(model, hook)
    if not 0 <= feature < sae.cfg.d_sae:
        raise CircuitError(f"feature {feature} is out of range: this SAE has features 0..{sae.cfg.d_sae - 1}")
    nodes = upstream(model, hook)
    hooks = list(dict.fromkeys(_hook_of(n) for n in nodes)) + [EMBED]
    ids, keep, last = _prompt_ids(model, prompts)
    rows = torch.arange(ids.shape[0], device=ids.device)
    sae.eval()
    seen: dict[str, torch.Tensor] = {}

    def read(a, hook=None):  # the SAE's input, kept in the graph for the metric
        seen["x"] = a
        return a

    def activation(x_BTD: torch.Tensor) -> torch.Tensor:
        z_B = sae.encode(x_BTD[rows, last].reshape(len(rows), -1).to(sae.device, sae.W_enc.dtype))[:, feature]
        return z_B.sum()

    with model.hooks(fwd_hooks=[(hook, read)]):
        value, acts, grads = gradients(model, ids, hooks, lambda _logits: activation(seen["x"]))
    mean = _means(acts, keep)
    ablate = keep.clone()  # every kept position (never the BOS) is ablated
    attr = {}
    for node in nodes:
        h = _hook_of(node)
        diff, g = acts[h] - mean[h], grads[h]
        if node.startswith("a"):
            head = int(node.split(".h")[1])
            diff, g = diff[:, :, head], g[:, :, head]
        attr[node] = float((g * diff)[ablate].sum())
    ranked = sorted(nodes, key=lambda n: -abs(attr[n]))
    top = ranked[:validate]
    exact = {n: value - _ablated(model, ids, hook, n, mean[_hook_of(n)], ablate, activation) for n in top}
    rho = None
    if len(top) > 2 and len({attr[n] for n in top}) > 1 and len({exact[n] for n in top}) > 1:
        rho = float(spearmanr([attr[n] for n in top], [exact[n] for n in top]).statistic)  # else undefined
    pos_BT = ((acts[EMBED] - mean[EMBED]) * grads[EMBED]).sum(-1) * ablate
    tokens, positions, spaced = [], [], True
    for b in range(ids.shape[0]):
        n = int(last[b]) + 1
        shown, spaced = display_tokens(model.tokenizer, ids[b, 1:n].tolist())
        tokens.append(shown)
        positions.append(pos_BT[b, 1:n].tolist())
    return Drivers(feature, hook, len(prompts), value,
                   [Component(n, attr[n], exact.get(n)) for n in ranked], rho, len(top), tokens, positions, spaced)


@torch.no_grad()
def _ablated(model, ids, hook: str, node: str, mean: torch.Tensor, where_BT: torch.Tensor, activation) -> float:
    """The metric with ``node``'s output replaced by its mean at ``where_BT``."""
    head = int(node.split(".h")[1]) if node.startswith("a") else None

    def edit(a: torch.Tensor) -> torch.Tensor:
        out = a.clone()
        if head is None:
            out[where_BT] = mean.to(out)
        else:
            out[:, :, head][where_BT] = mean[head].to(out)
        return out
    with patching(model, {_hook_of(node): edit}):
        x = capture(model, ids, [hook])[hook]
    return float(activation(x))
