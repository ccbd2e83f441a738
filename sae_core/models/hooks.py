"""The hooks layer every analysis reads a model through (DESIGN.md section 2).

- ``capture_at_hook``: one hook, the forward pass stopped right there (harvest's hot loop: no
  later layer, final norm or unembed is computed);
- ``capture``: several hooks in one pass, of any width (``hook_z`` is ``[B, T, H, d_head]``),
  optionally with gradients kept, so a later quantity can be differentiated with respect to them
  (attribution patching); the pass stops once every hook has fired unless the logits are wanted.

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


def _capture_BTD(model, hook: str, tokens_BT: torch.Tensor) -> torch.Tensor:
    try:
        model(tokens_BT)
    except _HookReached as hit:
        return hit.acts_BTD
    raise SAECoreError(f"hook {hook!r} never fired during the forward pass; it cannot be harvested")


@contextmanager
def capture_at_hook(model, hook: str) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """Yields ``capture(tokens_BT) -> acts_BTD``: the activation at ``hook``, the forward pass
    stopped right there. The hook is registered once for the whole block rather than per batch to
    keep loops lean; it is removed on exit."""
    check_hook(model, hook)
    with model.hooks(fwd_hooks=[(hook, _stop_here)]):
        yield lambda tokens_BT: _capture_BTD(model, hook, tokens_BT)


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
