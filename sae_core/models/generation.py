"""Greedy generation with the KV cache, and the absolute position of every forward pass.

With the cache, the prompt is run once and every later pass sees only the new token, so a hook
sees ``[B, 1, d]`` and cannot tell which position that is. ``PositionClock`` says it: during
``generate`` its ``offset`` is the absolute position of the first token of the current pass
(0 for the prompt, then T, T+1, ...), and ``positions(n)`` gives the pass's ``n`` absolute
positions. Interventions (``sae_core.steering``) read it, so "positions 3 and 5" or "generated
tokens only" mean the same with and without the cache (anchors get this wrong: steering-vectors'
token indices under the cache, its issue 60; CAA misses the first generated token).

``generate`` works for a ``TransformerBridge`` (``return_type="logits_and_cache"``) and for a
plain ``transformers`` causal LM (``use_cache=True``), handing the model's own ``Cache`` object back
under the name its forward takes. Rows of a batch must have the same length
(``greedy_continuations`` batches prompts by length), so no padding or position ids are ever involved.

``read_prompt`` is where a user's prompt becomes the ids a generation starts from: an empty prompt
is a ``PromptError``, and one longer than the model's context says how much of it the model reads.
"""
from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sae_core.errors import SAECoreError
from sae_core.models.loading import to_tokens, unknown_words


class PositionClock:
    """The absolute position of the current forward pass's first token (see module doc), and
    the prompt of the current generation (``prompt_len``, ``prompt_BT``; None outside one).
    Outside ``generate`` the offset reads 0: a plain forward pass starts at position 0."""

    def __init__(self):
        self.offset = 0
        self.prompt_len: int | None = None
        self.prompt_BT: torch.Tensor | None = None
        self.row_ids: torch.Tensor | None = None  # in ``greedy_continuations``: each batch row's prompt index

    def positions(self, n: int, device=None) -> torch.Tensor:
        return torch.arange(self.offset, self.offset + n, device=device)


def clock_of(model) -> PositionClock:
    """The model's clock (created on first use, kept on the model object)."""
    clock = getattr(model, "_sae_studio_clock", None)
    if clock is None:
        clock = PositionClock()
        object.__setattr__(model, "_sae_studio_clock", clock)
    return clock


def _is_bridge(model) -> bool:
    return hasattr(model, "hooks") and hasattr(model, "original_model")


def _cache_kwarg(hf_model) -> str:
    """The name ``hf_model.forward`` takes its KV cache by: transformers 5.25 renamed
    ``past_key_values`` to ``cache`` (the old name warns a FutureWarning on every cached step and
    goes in 5.40); older releases and other models know only ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(hf_model.forward).parameters else "past_key_values"


def _step(model, ids_BT: torch.Tensor, cache):
    """(logits [B, T, V], new cache) of one pass over ``ids_BT`` after ``cache`` (None: none)."""
    if _is_bridge(model):
        # the bridge's own ``past_key_values=`` argument hands the cache on under the old name, so
        # pass it under the HF model's name: the bridge forwards unknown keywords as they are
        kwargs = {_cache_kwarg(model.original_model): cache} if cache is not None else {}
        logits, cache = model(ids_BT, return_type="logits_and_cache", use_cache=True, **kwargs)
        return logits, cache
    name = _cache_kwarg(model)
    out = model(ids_BT, use_cache=True, **({name: cache} if cache is not None else {}))
    return out.logits, getattr(out, name)


def _logits(model, ids_BT: torch.Tensor) -> torch.Tensor:
    out = model(ids_BT)
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def generate(model, ids_BT: torch.Tensor, n_new: int, *, use_cache: bool = True,
             done: Callable[[torch.Tensor], bool] | None = None) -> torch.Tensor:
    """``[B, T + n_new]``: the prompt rows followed by their greedy continuation.

    With ``use_cache`` the prompt is run once and each new token alone; without, the whole prefix
    is run again for every token (the reference the cached path is tested against). Either way
    ``clock_of(model).offset`` is each pass's first absolute position. ``done(new_BN)``, asked after
    each new token with the tokens generated so far, ends the generation early when it says True
    (the rows are then shorter than ``T + n_new``)."""
    if ids_BT.ndim != 2 or ids_BT.shape[1] == 0:
        raise SAECoreError(f"generate wants a [batch, positions] tensor of token ids with at least "
                           f"one position; got shape {tuple(ids_BT.shape)}")
    if n_new < 0:
        raise SAECoreError(f"n_new={n_new}: the number of new tokens must be >= 0")
    clock, cache = clock_of(model), None
    before = (clock.offset, clock.prompt_len, clock.prompt_BT)
    clock.prompt_len, clock.prompt_BT = ids_BT.shape[1], ids_BT
    try:
        for i in range(n_new):
            if use_cache:
                new_BT = ids_BT if i == 0 else ids_BT[:, -1:]
                clock.offset = 0 if i == 0 else ids_BT.shape[1] - 1
                logits, cache = _step(model, new_BT, cache)
            else:
                clock.offset = 0
                logits = _logits(model, ids_BT)
            ids_BT = torch.cat([ids_BT, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
            if done is not None and i + 1 < n_new and done(ids_BT[:, clock.prompt_len:]):
                break
    finally:
        clock.offset, clock.prompt_len, clock.prompt_BT = before
    return ids_BT


def _device(model) -> torch.device:
    return next(model.parameters()).device


MAX_ROWS = 256  # rows of one generation batch (prompts of one length beyond it are split)


@torch.no_grad()
def greedy_continuations(model, tokenizer, prompts: list[str], n_tokens: int,
                         use_cache: bool = True, decided: Callable[[str], bool] | None = None) -> list[str]:
    """Greedy ``n_tokens``-token continuation of each prompt, decoded (prompts batched by length, at
    most ``MAX_ROWS`` a batch, generated with the KV cache). ``decided(text)``: whether a row's
    continuation so far already settles what the caller asks of it; a batch stops early once every
    row is decided (its continuations are then shorter, by as many tokens as nothing needed).
    During each batch ``clock_of(model).row_ids`` holds its rows' indices in ``prompts``, so an
    intervention can be limited to some prompts (``Intervention.rows``) however they are batched."""
    encoded = tokenizer(prompts)["input_ids"]
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(encoded):
        by_len[len(ids)].append(i)
    out: list[str] = [""] * len(prompts)
    clock = clock_of(model)
    before = clock.row_ids
    try:
        for group in by_len.values():
            for s in range(0, len(group), MAX_ROWS):
                idx = group[s:s + MAX_ROWS]
                ids_BT = torch.tensor([encoded[i] for i in idx], device=_device(model))
                start = ids_BT.shape[1]

                def done(new_BN: torch.Tensor) -> bool:
                    return all(decided(tokenizer.decode(row, skip_special_tokens=True)) for row in new_BN.tolist())
                clock.row_ids = torch.tensor(idx, device=ids_BT.device)
                ids_BT = generate(model, ids_BT, n_tokens, use_cache=use_cache, done=done if decided else None)
                for row, i in enumerate(idx):
                    out[i] = tokenizer.decode(ids_BT[row, start:].tolist(), skip_special_tokens=True)
    finally:
        clock.row_ids = before
    return out


class PromptError(SAECoreError):
    """A prompt a generation cannot start from (an empty one)."""


@dataclass(frozen=True)
class Prompt:
    """A user's prompt as the model reads it. ``ids_1T`` is the BOS and the first ``n_read`` of the
    prompt's ``n_tokens`` tokens: ``to_tokens`` keeps the first ``context`` positions (the model's
    n_ctx), so a longer prompt loses its end, which ``unread`` holds as typed."""
    text: str
    ids_1T: torch.Tensor
    n_tokens: int                # the prompt's tokens, BOS left out
    n_read: int                  # of those, how many the model reads
    context: int                 # the model's context, in positions (the BOS takes one)
    unread: str                  # the end of ``text`` the model never reads ("" when it reads it all)
    unknown: tuple[str, ...]     # words outside the vocabulary (``unknown_words``)

    @property
    def truncated(self) -> bool:
        return self.n_read < self.n_tokens

    @property
    def truncation_warning(self) -> str | None:
        """The line the page and the CLI show for a prompt longer than the context (None: read whole)."""
        if not self.truncated:
            return None
        tail = self.unread if len(self.unread) <= 80 else self.unread[:77] + "..."
        return (f"the prompt is {self.n_tokens} tokens; the model reads the first {self.n_read} (its context is "
                f"{self.context} positions, one of them the BOS) and continues from there; it never reads "
                f"the rest: {tail!r}")


def read_prompt(model, prompt: str) -> Prompt:
    """``prompt`` as ``model`` reads it (``Prompt``); an empty or blank prompt is a ``PromptError``
    (it would leave the model only the BOS to continue)."""
    if not prompt.strip():
        raise PromptError(f"Type a prompt first: the prompt {prompt!r} is empty, and the model needs "
                          "some text to continue")
    ids_1T = to_tokens(model, prompt)
    tok = model.tokenizer
    enc = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
    n_tokens, n_read = len(enc["input_ids"]), ids_1T.shape[1] - 1
    unread = prompt[enc["offset_mapping"][n_read][0]:].strip() if n_read < n_tokens else ""
    return Prompt(prompt, ids_1T, n_tokens, n_read, model.cfg.n_ctx, unread, tuple(unknown_words(tok, prompt)))
