"""The hooks layer every analysis reads a model through (the design notes, ``shared/DESIGN.md`` beside
the repository, section 2).

- ``capture_at_hook``: one hook, per token (``[B, T, W]``: ``hook_z``'s heads flattened), the
  forward pass stopped right there (harvest's hot loop: no later layer, final norm or unembed is
  computed);
- ``capture``: several hooks in one pass, of any width (``hook_z`` is ``[B, T, H, d_head]``),
  optionally with gradients kept, so a later quantity can be differentiated with respect to them
  (attribution patching); the pass stops once every hook has fired unless the logits are wanted.

- ``patching``: a context in which chosen hooks' activations are replaced, everywhere or only at
  given absolute positions (mean ablation, activation and path patching build on it).

Hook names are checked against the model first (``check_hook``), so a typo is one clear error.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator

import torch

from sae_core.errors import SAECoreError
from sae_core.models.loading import check_hook


class _HookReached(Exception):
    """Raised from inside a hook to end the forward pass once the activations are captured."""

    def __init__(self, acts_BTD: torch.Tensor | None = None):
        self.acts_BTD = acts_BTD


def _stop_here(acts_BTD: torch.Tensor, hook) -> None:
    raise _HookReached(acts_BTD)


NOT_PER_TOKEN = ("hook_pattern", "hook_attn_scores")


def per_token(hook: str, acts: torch.Tensor, tokens_BT: torch.Tensor) -> torch.Tensor:
    """``[B, T, W]``: a per-token hook's activation with its trailing dimensions flattened
    (``hook_z`` ``[B, T, H, d_head]`` -> ``[B, T, H * d_head]``). Attention patterns and scores
    (``[B, H, T, T]``) are not per token: a clear error."""
    if hook.endswith(NOT_PER_TOKEN) or acts.ndim < 3 or tuple(acts.shape[:2]) != tuple(tokens_BT.shape):
        raise SAECoreError(
            f"hook {hook!r} is not per token: its activation has shape {tuple(acts.shape)} for "
            f"tokens of shape {tuple(tokens_BT.shape)} (attention patterns are [batch, head, query, "
            "key]); use a per-token hook such as blocks.0.attn.hook_z, blocks.0.mlp.hook_post or "
            "blocks.0.hook_resid_post")
    return acts.reshape(*tokens_BT.shape, -1)


def _capture_BTD(model, hook: str, tokens_BT: torch.Tensor) -> torch.Tensor:
    try:
        model(tokens_BT)
    except _HookReached as hit:
        return per_token(hook, hit.acts_BTD, tokens_BT)
    raise SAECoreError(f"hook {hook!r} never fired during the forward pass; it cannot be harvested")


@contextmanager
def capture_at_hook(model, hook: str) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """Yields ``capture(tokens_BT) -> acts_BTD``: the activation at ``hook`` per token
    (``per_token``: trailing dimensions flattened), the forward pass stopped right there. The
    hook is registered once for the whole block rather than per batch to keep loops lean; it is
    removed on exit. Do not run another capture of the same model inside the block: its forward
    pass would stop at this hook too (``capture`` reads several hooks in one pass)."""
    check_hook(model, hook)
    with model.hooks(fwd_hooks=[(hook, _stop_here)]):
        yield lambda tokens_BT: _capture_BTD(model, hook, tokens_BT)


def hook_width(model, hook: str) -> int:
    """The per-token width of ``hook`` (one two-token forward pass, stopped at the hook)."""
    from sae_core.models.loading import to_tokens

    with torch.inference_mode(), capture_at_hook(model, hook) as grab:
        return int(grab(to_tokens(model, "a")).shape[-1])


def capture(model, tokens_BT: torch.Tensor, hooks: list[str], *, grad: bool = False,
            logits: bool = False) -> dict[str, torch.Tensor]:
    """The activations at ``hooks`` for ``tokens_BT`` in one forward pass, by hook name, plus the
    output under ``"logits"`` when ``logits`` (otherwise the pass stops after the last hook).

    ``grad=False`` runs under ``no_grad``; ``grad=True`` keeps the graph, so for example
    ``torch.autograd.grad(metric(out["logits"]), out[hook])`` gives the metric's gradient at a
    hook. A hook that fires twice keeps its last value."""
    names = list(dict.fromkeys(hooks))
    for name in names:
        check_hook(model, name)
    got: dict[str, torch.Tensor] = {}

    def grabber(name: str):  # keyed by the name asked for: the bridge may fire it under an alias
        def grab(acts, hook):
            got[name] = acts
            if not logits and len(got) == len(names):
                raise _HookReached()
        return grab

    with (nullcontext() if grad else torch.no_grad()), \
            model.hooks(fwd_hooks=[(n, grabber(n)) for n in names]):
        try:
            out = model(tokens_BT)
            if logits:
                got["logits"] = out
        except _HookReached:
            pass
    if missing := [n for n in names if n not in got]:
        raise SAECoreError(f"hooks {missing} never fired during the forward pass; they cannot be captured")
    return got


Edit = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def patching(model, edits: dict[str, Edit], positions: torch.Tensor | None = None) -> Iterator[None]:
    """Inside the block, each forward pass has the activation at every hook of ``edits`` replaced
    by ``edits[hook](acts)`` (same shape: ``[B, T, ...]``, ``hook_z`` as ``[B, T, H, d_head]``).
    ``positions`` (absolute token positions, ``[P]``) limits the replacement to those positions;
    the other positions keep the model's own values. The edits see the whole activation, so an
    edit may read the clean values it replaces."""
    for name in edits:
        check_hook(model, name)

    def hook_fn(edit: Edit):
        def fn(acts, hook):
            new = edit(acts)
            if tuple(new.shape) != tuple(acts.shape):
                raise SAECoreError(f"a patch at {hook.name} returned shape {tuple(new.shape)} for an activation of "
                                   f"shape {tuple(acts.shape)}; return a tensor of the same shape")
            if positions is None:
                return new
            out = acts.clone()
            out[:, positions] = new[:, positions]
            return out
        return fn

    with model.hooks(fwd_hooks=[(name, hook_fn(edit)) for name, edit in edits.items()]):
        yield


def gradients(model, tokens_BT: torch.Tensor, hooks: list[str], metric: Callable[[torch.Tensor], torch.Tensor]
              ) -> tuple[float, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(metric(logits), acts, grads)``: one forward and one backward pass. ``grads[hook]`` is the
    gradient of the scalar ``metric`` with respect to the activation at ``hook`` *as its consumer
    reads it*: the hook's output gets a zero probe added, so where a tensor feeds several modules
    (a parallel-residual layer's attention and MLP both read ``resid_pre``) the gradient at
    ``blocks.{l}.ln2.hook_in`` is the MLP's alone. ``acts`` are the activations, detached."""
    names = list(dict.fromkeys(hooks))
    for name in names:
        check_hook(model, name)
    probes: dict[str, torch.Tensor] = {}
    acts: dict[str, torch.Tensor] = {}

    def prober(name: str):
        def probe(a, hook):
            acts[name] = a.detach()
            probes[name] = torch.zeros_like(a, requires_grad=True)
            return a + probes[name]
        return probe

    with torch.enable_grad(), model.hooks(fwd_hooks=[(n, prober(n)) for n in names]):
        value = metric(model(tokens_BT))
    if missing := [n for n in names if n not in probes]:
        raise SAECoreError(f"hooks {missing} never fired during the forward pass; no gradient can be taken there")
    grads = torch.autograd.grad(value, [probes[n] for n in names], allow_unused=True)
    return float(value.detach()), acts, {n: (g if g is not None else torch.zeros_like(probes[n])) for n, g in zip(names, grads)}
