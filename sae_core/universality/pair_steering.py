"""Steering two models through a matched pair of features, against random pairs (issue #32).

For pair i of a universality result, feature a of model A's SAE and its partner b of model B's:

- **Matched strength.** Each model gets ``fraction`` x its feature's typical activation (its mean
  where it fires on the shared prompts) times the feature's decoder row, added at its SAE's hook at
  every kept position (the BOS, padding and special tokens left alone): the same fraction of each
  feature's own scale, since the two SAEs' activations are not on one scale.
- **Effect.** On each side, the change of the next-token log-probabilities at every kept position of
  the shared prompts (held-out zoo documents, the same tokens for both models: one tokenizer,
  checked), each position's change centred over the vocabulary.
- **Similarity.** The cosine of the two effects, all positions concatenated: 1 when both models'
  predictions move alike, 0 when unrelated.
- **Null.** ``runs`` random pairs (a_j, b_k), j != k, drawn from the result's matched features and
  steered the same way; p = (1 + #null >= observed) / (1 + runs), z against the null's mean and sd.

``raised_a`` / ``raised_b``: the tokens whose log-probability each side's steering raises most on
average, to read what the two effects share.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from sae_core.models.hooks import capture, patching
from sae_core.models.loading import keep_mask_BT, to_tokens
from sae_core.models.texts import corpus_texts
from sae_core.models.tokenizer import same_tokenizer
from sae_core.sae.base import SAE
from sae_core.universality.measures import UniversalityError

N_TEXTS, CONTEXT = 24, 48  # shared prompts: held-out zoo documents, cut to this many tokens
TEXT_SEED = 4242


@dataclass(frozen=True)
class PairEffect:
    pair: int
    a: int
    b: int
    fraction: float
    strength_a: float          # the added multiple of the decoder row (fraction x typical activation)
    strength_b: float
    similarity: float
    null: list[float]          # the random pairs' similarities
    p: float
    z: float
    raised_a: list[tuple[str, float]]
    raised_b: list[tuple[str, float]]
    n_positions: int

    def to_json(self) -> dict:
        return asdict(self)


class _Side:
    """One model, its SAE and hook, on the shared prompts: clean log-probs, the features' typical
    activations, and the effect of adding a feature's row."""

    def __init__(self, model, sae: SAE, hook: str, ids_BT: torch.Tensor, keep_BT: torch.Tensor):
        self.model, self.sae, self.hook, self.ids, self.keep = model, sae.eval(), hook, ids_BT, keep_BT
        with torch.no_grad():
            self.clean = torch.log_softmax(model(ids_BT).float(), -1)[keep_BT]  # [N, V]
            x = capture(model, ids_BT, [hook])[hook]
            if x[0, 0].numel() != sae.cfg.d_in:
                raise UniversalityError(f"the SAE reads d_in={sae.cfg.d_in} but {hook} has width {x[0, 0].numel()}")
            z = sae.encode(x[keep_BT].reshape(int(keep_BT.sum()), -1).to(sae.device, sae.W_enc.dtype)).float()
            self.typical = z.sum(0) / (z > 0).sum(0).clamp_min(1)  # mean where it fires (0: never fires)
        self._effects: dict[tuple[int, float], torch.Tensor] = {}

    def effect(self, f: int, fraction: float) -> torch.Tensor:
        """``[N, V]``: the centred change of log-probabilities with feature ``f`` added at matched strength."""
        key = (f, fraction)
        if key not in self._effects:
            row = (fraction * self.typical[f] * self.sae.W_dec[f].detach().float()).to(self.ids.device)
            keep = self.keep

            def add(a: torch.Tensor) -> torch.Tensor:
                out = a.clone()
                out[keep] = out[keep] + row.reshape(out.shape[2:]).to(out)
                return out
            with torch.no_grad(), patching(self.model, {self.hook: add}):
                d = torch.log_softmax(self.model(self.ids).float(), -1)[keep] - self.clean
            self._effects[key] = d - d.mean(-1, keepdim=True)
        return self._effects[key]


def _cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.flatten().double(), y.flatten().double()
    den = float(x.norm() * y.norm())
    return float(x @ y) / den if den > 0 else 0.0


def steer_pair(model_a, sae_a: SAE, hook_a: str, model_b, sae_b: SAE, hook_b: str, pairs: list[tuple[int, int]],
               i: int, *, fraction: float = 2.0, runs: int = 50, seed: int = 0,
               texts: list[str] | None = None) -> PairEffect:
    """Pair ``i`` of ``pairs`` ((a, b) feature numbers) steered in both models (module doc)."""
    if not 0 <= i < len(pairs):
        raise UniversalityError(f"pair {i} does not exist: this result has pairs 0..{len(pairs) - 1}")
    if not np.isfinite(fraction) or fraction == 0:
        raise UniversalityError(f"fraction {fraction!r}: give a finite, non-zero multiple of the typical activation")
    if runs < 2:
        raise UniversalityError(f"runs={runs}: a null needs at least 2 random pairs (50 is the default)")
    if len(pairs) < 3:
        raise UniversalityError("a null of random pairs needs at least 3 matched pairs")
    same_tokenizer(model_a.tokenizer, model_b.tokenizer, UniversalityError)
    tok = model_a.tokenizer
    ids = to_tokens(model_a, texts or corpus_texts(N_TEXTS, seed=TEXT_SEED))[:, :CONTEXT]
    keep = keep_mask_BT(ids, tok.pad_token_id, sorted(set(getattr(tok, "all_special_ids", []) or [])), True)
    sides = (_Side(model_a, sae_a, hook_a, ids.to(next(model_a.parameters()).device), keep),
             _Side(model_b, sae_b, hook_b, ids.to(next(model_b.parameters()).device), keep))
    a, b = pairs[i]
    if sides[0].typical[a] == 0 or sides[1].typical[b] == 0:
        raise UniversalityError(f"feature {a if sides[0].typical[a] == 0 else b} never fires on the shared prompts: "
                                "it has no typical activation to steer at; choose another pair")

    def similarity(fa: int, fb: int) -> float:
        return _cosine(sides[0].effect(fa, fraction), sides[1].effect(fb, fraction))
    observed = similarity(a, b)
    rng = np.random.default_rng(seed)
    live = [j for j, (x, y) in enumerate(pairs) if sides[0].typical[x] > 0 and sides[1].typical[y] > 0]
    null = []
    for _ in range(runs):
        j, k = rng.choice(live, size=2, replace=False)
        null.append(similarity(pairs[j][0], pairs[k][1]))
    arr = np.asarray(null)
    sd = float(arr.std(ddof=1))
    raised = [[(tok.decode([int(v)]), float(m)) for m, v in zip(*s.effect(f, fraction).mean(0).topk(5))]
              for s, f in zip(sides, (a, b))]
    return PairEffect(i, a, b, fraction, float(fraction * sides[0].typical[a]), float(fraction * sides[1].typical[b]),
                      observed, null, float((1 + (arr >= observed).sum()) / (1 + runs)),
                      float((observed - arr.mean()) / sd) if sd > 0 else 0.0, raised[0], raised[1], int(keep.sum()))


def steer_result_pair(ws, result, i: int, *, fraction: float = 2.0, runs: int = 50, load=None) -> PairEffect:
    """``steer_pair`` on pair ``i`` of a ``Universality`` result, with its models and SAEs (workspace
    artifacts named in the result); ``load(name)``: how models are loaded (default ``load_model``)."""
    from sae_core.models.loading import load_model
    from sae_core.sae.io import load_sae

    cfg, r = result.config, result.results
    saes = []
    for side in "ab":
        art = ws.get("sae", r["saes"][side])
        if art is None:
            raise UniversalityError(f"the result's SAE {r['saes'][side]!r} (model {side.upper()}) is not in {ws.root} "
                                    "any more: build the comparison again")
        saes.append(load_sae(art.path))
    load = load or load_model
    pairs = [(p["a"], p["b"]) for p in r["pairs"]]
    return steer_pair(load(cfg["model_a"]), saes[0], cfg["hook_a"], load(cfg["model_b"]), saes[1], cfg["hook_b"],
                      pairs, i, fraction=fraction, runs=runs)
