"""How much to steer, and where: dose-response over alpha, coherence, and the layer x alpha grid.

- ``coherence_kl(model, specs, texts)``: the mean next-token KL(unsteered || steered) over the kept
  tokens of clean text, the intervention's cost to everything else (0 where it never fires).
- ``dose_response(model, vectors, alphas, prompts, op=, positions=, starts=)``: for each vector and
  alpha, the fraction of greedy continuations of ``prompts`` that start with ``starts``.
- ``min_dose(rows, vector, target, direction)``: the stated rule for alpha, the smallest |alpha|
  at which the vector reaches ``target`` with a margin for the sampling error of the selection
  prompts: the one-sided 95% Wilson bound of the rate, not the rate itself, must be on the right
  side (``"down"``: upper bound <= target, removal; ``"up"``: lower bound >= target, induction).
  Chosen on selection prompts, then measured on held-out ones. (The bare rate picked removal's
  -0.8 on 50 selection prompts, which left 15% on held-out ones against a 10% target.)
- ``layer_alpha_grid(model, vector_at, layers, alphas, ...)``: per (layer, alpha), the rate of the
  layer's own vector and of a norm-matched random one, and the coherence KL, drawn as one heatmap.
- ``choose_layer(grid, target, direction, max_kl)``: refusal_direction's kind of rule made
  explicit: among layers below int((1 - ``skip_last``) * n_layers), those where some alpha reaches
  the target with KL <= ``max_kl``; the last of them (the paper's "last strongly steerable layer").
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from sae_core.models.loading import keep_mask_BT, to_tokens
from sae_core.steering.behaviour import starts_rates as rates_of
from sae_core.steering.interventions import Intervention, InterventionError, Positions, intervene
from sae_core.steering.vectors import SteeringVector

DIRECTIONS = ("down", "up")


@torch.no_grad()
def coherence_reference(model, texts: list[str], *, context_size: int = 64,
                        batch_size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The unsteered side of ``coherence_kl`` per batch: ``(ids, kept, log p_unsteered)``, to
    compute once for many interventions on the same texts (a layer x alpha grid)."""
    if not texts:
        raise InterventionError("coherence needs at least one text")
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(texts), batch_size):
        ids = to_tokens(model, texts[s:s + batch_size])[:, :context_size].to(device)
        ok = keep_mask_BT(ids, model.tokenizer.pad_token_id, [], False)[:, 1:]
        out.append((ids, ok, torch.log_softmax(model(ids)[:, :-1].double(), -1)))
    return out


@torch.no_grad()
def coherence_kl(model, specs: list[Intervention], texts: list[str], *, context_size: int = 64,
                 batch_size: int = 32, reference: list | None = None) -> float:
    """Mean KL(p_unsteered || p_steered) of the next token over the kept tokens of ``texts``
    (``reference``: ``coherence_reference`` of the same texts, computed once)."""
    ref = reference if reference is not None else coherence_reference(
        model, texts, context_size=context_size, batch_size=batch_size)
    total, n = 0.0, 0
    for ids, ok, clean in ref:
        with intervene(model, specs, tokens=ids):
            steered = torch.log_softmax(model(ids)[:, :-1].double(), -1)
        total += float((clean.exp() * (clean - steered)).sum(-1)[ok].sum())
        n += int(ok.sum())
    return total / max(1, n)


def _spec(v: SteeringVector | torch.Tensor, hook: str, op: str, alpha: float, positions: Positions,
          name: str) -> Intervention:
    vec = v.vector if isinstance(v, SteeringVector) else v
    return Intervention(hook, op, vector=vec, alpha=alpha, positions=positions, name=name)


def dose_response(model, vectors: dict[str, SteeringVector], alphas: list[float], prompts: list[str], *,
                  starts: str, op: str = "add", positions: Positions = Positions(),
                  n_tokens: int | None = None, hooks: list[str] | None = None,
                  on_step: Callable[[], None] | None = None) -> list[dict]:
    """Rows ``{vector, alpha, rate}`` (module doc); every vector at its own hook, or at each of
    ``hooks`` at once (ablation at every layer). ``n_tokens``: as ``behaviour.starts_rate`` (None:
    as many as ``starts`` takes in the model's tokenizer)."""
    if not alphas or any(not math.isfinite(a) for a in alphas):
        raise InterventionError(f"alphas {alphas!r}: give at least one finite number")
    cells = [(name, a, [_spec(v, h, op, a, positions, f"{name} at {h}") for h in hooks] if hooks
              else [_spec(v, v.hook, op, a, positions, name)]) for name, v in vectors.items() for a in alphas]
    got = rates_of(model, prompts, [specs for _, _, specs in cells], starts, n_tokens)  # one batched generation
    rows = []
    for (name, a, _), r in zip(cells, got):
        rows.append({"vector": name, "alpha": float(a), "n": len(prompts), "rate": r})
        if on_step:
            on_step()
    return rows


def wilson_bound(rate: float, n: int, upper: bool, z: float = 1.645) -> float:
    """The one-sided Wilson score bound (z = 1.645: 95%) of a rate measured on ``n`` prompts."""
    if n <= 0:
        raise InterventionError(f"a rate over n={n} prompts has no confidence bound; give n >= 1")
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre + half if upper else centre - half


def min_dose(rows: list[dict], vector: str, target: float, direction: str) -> float | None:
    """The smallest |alpha| among ``vector``'s rows that reaches ``target`` by the bound of the
    module doc (rows without ``n``: by the bare rate)."""
    if direction not in DIRECTIONS:
        raise InterventionError(f"direction {direction!r}; choose one of {', '.join(DIRECTIONS)}")

    def bound(r):
        return r["rate"] if "n" not in r else wilson_bound(r["rate"], r["n"], upper=direction == "down")
    hits = [r["alpha"] for r in rows if r["vector"] == vector
            and (bound(r) <= target if direction == "down" else bound(r) >= target)]
    return min(hits, key=abs) if hits else None


def layer_alpha_grid(model, vector_at: Callable[[str], SteeringVector], layers: list[int], alphas: list[float],
                     prompts: list[str], texts: list[str], *, starts: str, op: str = "add",
                     positions: Positions = Positions(), seed: int = 0,
                     on_step: Callable[[], None] | None = None) -> list[dict]:
    """Rows ``{layer, hook, alpha, norm, rate, random_rate, kl}``: ``vector_at(hook)`` built at each
    ``blocks.L.hook_resid_post`` and applied there (module doc)."""
    from sae_core.steering.transfer import random_control

    rows, reference = [], coherence_reference(model, texts)
    for layer in layers:
        hook = f"blocks.{layer}.hook_resid_post"
        v = vector_at(hook)
        r = random_control(v, seed)
        specs = [_spec(v, hook, op, a, positions, "vector") for a in alphas]
        got = rates_of(model, prompts, [[s] for s in specs] + [[_spec(r, hook, op, a, positions, "random")]
                                                               for a in alphas], starts)  # the layer's cells at once
        for i, (a, spec) in enumerate(zip(alphas, specs)):
            rows.append({"layer": layer, "hook": hook, "alpha": float(a), "norm": v.norm,
                         "rate": got[i], "random_rate": got[len(alphas) + i],
                         "kl": coherence_kl(model, [spec], texts, reference=reference)})
            if on_step:
                on_step()
    return rows


def choose_layer(grid: list[dict], target: float, direction: str, *, max_kl: float = 0.1,
                 skip_last: float = 0.2, n_layers: int | None = None) -> dict | None:
    """The chosen ``{layer, alpha, rate, kl}`` by the rule of the module doc, or None when no layer
    qualifies; within the layer, the smallest |alpha| that reaches the target."""
    if direction not in DIRECTIONS:
        raise InterventionError(f"direction {direction!r}; choose one of {', '.join(DIRECTIONS)}")
    n_layers = n_layers or 1 + max(r["layer"] for r in grid)
    cut = int((1 - skip_last) * n_layers + 1e-9)  # refusal_direction's cut: layers below it
    ok = [r for r in grid if r["layer"] < cut and r["kl"] <= max_kl
          and (r["rate"] <= target if direction == "down" else r["rate"] >= target)]
    if not ok:
        return None
    last = max(r["layer"] for r in ok)
    best = min((r for r in ok if r["layer"] == last), key=lambda r: abs(r["alpha"]))
    return {k: best[k] for k in ("layer", "hook", "alpha", "rate", "kl")}
