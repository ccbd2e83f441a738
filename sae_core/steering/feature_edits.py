"""Steering with SAE features: add a feature's decoder row, or clamp its activation through the SAE.

Two edits of feature f of an SAE at a hook (activations x, codes z = ``sae.encode(x)`` by the
SAE's inference rule):

- ``add``:   x + alpha W_dec[f]. The decoder's rows have unit norm, so alpha is in the feature's own
  activation units (alpha = the feature's max activation adds what its strongest firing adds).
- ``clamp``: the SAE spliced in with its error term kept and z_f set to V:
  decode(z') + (x - decode(z)) = x + (V - z_f) W_dec[f], because decode is affine. The right-hand
  side is what is computed, so a feature whose code already equals V (or an SAE spliced with
  nothing clamped) leaves x bit for bit as it was (tested), where decode(z') + (x - decode(z))
  would round. Several clamps read one encoding of x.

Clamps act first (on the unedited activations), then adds. Every edit acts at the positions a
``Positions`` rule picks, and never at position 0: the BOS, which the SAE never read in training
(harvesting leaves special tokens out); Neuronpedia's steering leaves special tokens alone too.

``watch_features`` records chosen features' activations at the hook *before* the edits, per row and
absolute position (``PositionClock``), so a steered generation can be shaded by how strongly its
tokens carry the feature. ``steer_columns`` generates one prompt under several edit sets in one
batched pass with the KV cache (row i under the i-th set; an empty set is the plain model).
"""
from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from sae_core.features.probe import check_feature_index
from sae_core.models.generation import Prompt, clock_of, generate, read_prompt
from sae_core.models.hooks import hook_width
from sae_core.models.loading import check_hook
from sae_core.models.tokens import display_tokens
from sae_core.sae.base import SAE
from sae_core.steering.interventions import Intervention, InterventionError, Positions, intervene

MODES = ("add", "clamp")


@dataclass(frozen=True)
class FeatureEdit:
    feature: int
    mode: str      # "add": x + value W_dec[f]; "clamp": z_f set to value (module doc)
    value: float

    def __post_init__(self):
        if self.mode not in MODES:
            raise InterventionError(f"feature edit mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if isinstance(self.feature, bool) or not isinstance(self.feature, int):
            raise InterventionError(f"feature {self.feature!r}: give a feature number (an integer)")
        if not isinstance(self.value, (int, float)) or not math.isfinite(self.value):
            what = "clamp value" if self.mode == "clamp" else "alpha"
            raise InterventionError(f"{what} {self.value!r} for feature {self.feature} is not a finite number; "
                                    "give a real number such as 0 or 5")

    @property
    def label(self) -> str:
        return f"#{self.feature} = {self.value:g}" if self.mode == "clamp" else f"#{self.feature} α={self.value:g}"


class Clamp:
    """The SAE spliced at its hook with the error term kept and some codes set (module doc):
    ``[..., d_in] -> [..., d_in]``. With no features it is the identity, bit for bit."""

    def __init__(self, sae: SAE, features: list[int], values: list[float]):
        self.sae, self.features = sae, list(features)
        self.values_F = torch.tensor(values, dtype=sae.W_dec.dtype, device=sae.device)

    @torch.no_grad()
    def __call__(self, x_BTD: torch.Tensor) -> torch.Tensor:
        if not self.features:
            return x_BTD
        x_ND = x_BTD.reshape(-1, x_BTD.shape[-1]).to(self.sae.device, self.sae.W_dec.dtype)
        z_NF = self.sae.encode(x_ND)[:, self.features]
        shift_ND = (self.values_F - z_NF) @ self.sae.W_dec[self.features]  # exactly 0 where z_f = V
        return x_BTD + shift_ND.reshape(x_BTD.shape).to(x_BTD.device, x_BTD.dtype)


def check_sae_fits(model, sae: SAE, hook: str) -> None:
    """The SAE reads ``hook`` of ``model``: the hook exists, is the one the SAE names (when it names
    one) and has the SAE's width; else an ``InterventionError`` that says which and what to do."""
    check_hook(model, hook)
    named = sae.cfg.hook_name
    if named and named != hook:
        raise InterventionError(f"this SAE was trained at {named}, not {hook}: steer at {named}, or load an "
                                f"SAE trained at {hook}")
    width = hook_width(model, hook)
    if width != sae.cfg.d_in:
        raise InterventionError(f"this SAE reads d_in={sae.cfg.d_in}, but {hook} of this model has width "
                                f"{width}: load the model the SAE was trained on ({sae.cfg.model_name or 'see its cfg.json'})")


def feature_interventions(sae: SAE, hook: str, edits: tuple[FeatureEdit, ...] | list[FeatureEdit],
                          positions: Positions = Positions("all"), name: str = "features") -> list[Intervention]:
    """``edits`` as interventions at ``hook``: one clamp (every clamped feature, one encoding) then
    one add per added feature; none at the BOS (module doc)."""
    for e in edits:
        check_feature_index(sae, e.feature)
    clamped = [e for e in edits if e.mode == "clamp"]
    if len({e.feature for e in clamped}) != len(clamped):
        raise InterventionError(f"a feature is clamped twice in {[e.label for e in clamped]}; clamp each once")
    sae.eval()  # the inference rule (a BatchTopK SAE in training mode would update its threshold)
    where = dataclasses.replace(positions, skip_first=True)
    out = []
    if clamped:
        out.append(Intervention(hook, "replace", mapper=Clamp(sae, [e.feature for e in clamped],
                                                               [e.value for e in clamped]),
                                positions=where, name=f"{name}:clamp"))
    for i, e in enumerate(x for x in edits if x.mode == "add"):
        out.append(Intervention(hook, "add", vector=sae.W_dec[e.feature].detach(), alpha=float(e.value),
                                positions=where, name=f"{name}:add{i}#{e.feature}"))
    return out


@dataclass
class FeatureTrace:
    """Activations recorded by ``watch_features``: (row, absolute position) -> codes of the features."""
    features: list[int]
    seen: dict[tuple[int, int], list[float]] = dataclasses.field(default_factory=dict)

    def values(self, feature: int, n_rows: int, length: int) -> torch.Tensor:
        """``[n_rows, length]``: ``feature``'s activation at each (row, position); 0 where not seen."""
        j = self.features.index(feature)
        out = torch.zeros(n_rows, length)
        for (row, pos), vals in self.seen.items():
            if row < n_rows and pos < length:
                out[row, pos] = vals[j]
        return out


@contextmanager
def watch_features(model, sae: SAE, hook: str, features: list[int]) -> Iterator[FeatureTrace]:
    """Record ``features``' activations at ``hook`` on every forward pass inside the block. Entered
    before ``intervene`` on the same hook, it sees the activations before the edits (hooks at one
    point run in the order they were added)."""
    for f in features:
        check_feature_index(sae, f)
    sae.eval()
    clock, trace = clock_of(model), FeatureTrace(list(features))

    def fn(h_BTD, hook=None):
        B, T = h_BTD.shape[:2]
        with torch.no_grad():
            x_ND = h_BTD.reshape(B * T, -1).to(sae.device, sae.W_enc.dtype)
            z_BTF = sae.encode(x_ND)[:, features].reshape(B, T, -1).float().cpu()
        for t, pos in enumerate(clock.positions(T).tolist()):
            for b in range(B):
                trace.seen[(b, pos)] = z_BTF[b, t].tolist()
        return h_BTD

    with model.hooks(fwd_hooks=[(hook, fn)]):
        yield trace


@dataclass(frozen=True)
class FeatureColumn:
    label: str
    tokens: list[str]        # prompt as read and continuation, one string per token (BOS left out)
    n_prompt: int            # how many of ``tokens`` are the prompt
    acts: list[float]        # per token: the watched feature's activation there, before the edits
    edited: list[bool]       # per token: whether an edit acted there
    text: str                # the continuation alone
    spaced: bool = True      # tokens shown with spaces between (word-level; ``models.tokens``)


@torch.no_grad()
def steer_columns(model, sae: SAE, hook: str, prompt: str, columns: dict[str, tuple[FeatureEdit, ...]], *,
                  watch: int, positions: Positions = Positions("all"),
                  n_tokens: int = 20) -> tuple[list[FeatureColumn], Prompt]:
    """One batched greedy generation of ``prompt`` (KV cache), row i under the i-th column's edits;
    each column shaded by feature ``watch`` (module doc). Returns (columns, the prompt as read)."""
    if not columns:
        raise InterventionError("no columns to generate: give at least one set of edits (an empty one is "
                                "the plain model)")
    check_sae_fits(model, sae, hook)
    check_feature_index(sae, watch)
    read = read_prompt(model, prompt)
    labels = list(columns)
    specs = [dataclasses.replace(spec, rows=(i,))
             for i, label in enumerate(labels)
             for spec in feature_interventions(sae, hook, columns[label], positions, name=f"col{i}")]
    ids_BT = read.ids_1T.expand(len(labels), -1)
    with watch_features(model, sae, hook, [watch]) as trace, intervene(model, specs, record=True) as rec:
        out = generate(model, ids_BT, n_tokens)
    length, n_prompt, tok = out.shape[1], read.ids_1T.shape[1], model.tokenizer
    acts_BL = trace.values(watch, len(labels), length)
    edited_BL = torch.zeros(len(labels), length, dtype=torch.bool)
    for spec in specs:
        for row, pos, norm in rec.fired.get(spec.label, []):
            if pos < length and norm > 0:  # a clamp to the value the code already has changes nothing
                edited_BL[row, pos] = True
    cols = []
    for i, label in enumerate(labels):
        ids = out[i].tolist()
        shown, spaced = display_tokens(tok, ids[1:])
        cols.append(FeatureColumn(label, shown, n_prompt - 1, acts_BL[i, 1:].tolist(), edited_BL[i, 1:].tolist(),
                                  tok.decode(ids[n_prompt:], skip_special_tokens=True), spaced))
    return cols, read
