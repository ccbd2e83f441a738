"""One pass over a paired harvest: both SAEs' codes on the same token rows, reduced on the fly.

``code_pass(pair, sae_a, sae_b)`` reads the two stores shard by shard (row i of each is the same
document and position: ``PairedStores`` checked it), skips rows whose token is in ``drop_ids``
(pad/BOS/EOS when the harvest kept them), encodes each batch with both SAEs on the SAEs' device
into its active entries (``Codes``), and feeds the correlation accumulator, each feature's top
tokens and its firing count. Nothing of size tokens x features is kept.

``codes`` says what is correlated and ranked for top tokens: ``sparse``, the SAE's inference codes
(this project's default: the features as the SAE uses them), or ``pre_acts``, the dense ReLU
pre-activations before the sparsity rule, as the authors did (wlg1/univ_feat_geom
``getScores_pythia.py``: ``get_weights_and_acts`` takes ``sae.pre_acts``, and
``highest_activating_tokens`` ranks the same). Dense codes need a dense product per batch
(``bench/universality_pair.py`` measures its cost). Firing counts are the sparse codes' either way.

With ``null_every=m`` (> 0), every m-th batch also feeds two small accumulators: its A codes
against its own B codes, and the previous batch's A codes (other documents) against its B codes.
The second is what chance gives with the same features and token count as the first, which the
page draws against it; on one batch in m, so it adds about 2/m of the correlation work.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from sae_core.activations.paired import PairedStores
from sae_core.universality.correlation import Codes, Correlation, CorrelationAccumulator, TopTokens
from sae_core.universality.measures import UniversalityError

CODES = ("sparse", "pre_acts")


@dataclass(frozen=True)
class CodePass:
    correlation: Correlation
    top_a: list[set[int]]        # per A feature: the tokens of its top activations
    top_b: list[set[int]]
    top_ids_a: torch.Tensor      # [m, S_a] token ids of the top activations, highest first (-1: none)
    top_ids_b: torch.Tensor
    top_rows_a: torch.Tensor     # [m, S_a] the store rows of those activations (-1: none)
    top_rows_b: torch.Tensor
    fires_a: torch.Tensor        # [S_a] tokens on which each A feature fired
    fires_b: torch.Tensor
    n_tokens: int
    sub_correlation: Correlation | None = None   # on every null_every-th batch: the same token rows
    null_correlation: Correlation | None = None  # ... A codes against B codes of other token rows


def check_sae_fits(sae, store, side: str) -> None:
    """A clear error when an SAE was not made for a store's hook or width."""
    cfg, meta = sae.cfg, store.meta
    if cfg.d_in != meta.d:
        raise UniversalityError(f"SAE {side} reads width {cfg.d_in}, but the activations of {meta.model} at "
                                f"{meta.hook} are {meta.d} wide; choose an SAE trained at that hook")
    if cfg.hook_name and cfg.hook_name != meta.hook:
        raise UniversalityError(f"SAE {side} was trained at {cfg.hook_name}, not at {meta.hook}; choose an SAE "
                                f"of {meta.hook} (or harvest {cfg.hook_name})")
    if cfg.model_name and meta.model and cfg.model_name != meta.model:
        raise UniversalityError(f"SAE {side} was trained on {cfg.model_name}, not on {meta.model}")


@torch.no_grad()
def code_pass(pair: PairedStores, sae_a, sae_b, *, batch_size: int = 4096, max_tokens: int | None = None,
              drop_ids: set[int] | frozenset = frozenset(), top_m: int = 5, null_every: int = 0,
              codes: str = "sparse", on_progress: Callable[[int, int], None] | None = None) -> CodePass:
    if codes not in CODES:
        raise UniversalityError(f"codes={codes!r}: choose one of {', '.join(CODES)}")
    check_sae_fits(sae_a, pair.a, "A")
    check_sae_fits(sae_b, pair.b, "B")
    device = sae_a.device
    S_a, S_b = sae_a.cfg.d_sae, sae_b.cfg.d_sae
    acc = CorrelationAccumulator(S_a, S_b, device)
    acc_sub, acc_null = (CorrelationAccumulator(S_a, S_b, device) for _ in range(2)) if null_every else (None, None)
    prev_za, batch = None, 0
    tops = TopTokens(S_a, top_m, device), TopTokens(S_b, top_m, device)
    fires = torch.zeros(S_a, dtype=torch.int64, device=device), torch.zeros(S_b, dtype=torch.int64, device=device)
    total = min(pair.n_tokens, max_tokens) if max_tokens else pair.n_tokens
    drop = torch.tensor(sorted(drop_ids), dtype=torch.int64)
    done, offset = 0, 0
    for shard in range(len(pair.a.shard_rows)):
        if done >= total:
            break
        xa, ta = pair.a.read_shard(shard)
        xb, _ = pair.b.read_shard(shard)
        keep = ~torch.isin(ta, drop) if drop.numel() else torch.ones_like(ta, dtype=torch.bool)
        where = offset + keep.nonzero().squeeze(1)  # the kept rows' rows in the stores
        offset += ta.numel()
        xa, xb, ta = xa[keep], xb[keep], ta[keep]
        for s in range(0, xa.shape[0], batch_size):
            n = min(batch_size, total - done, xa.shape[0] - s)
            if n <= 0:
                break
            (za, fa), (zb, fb) = (_encode(sae, x[s:s + n].to(device), codes)
                                  for sae, x in ((sae_a, xa), (sae_b, xb)))
            tok, rows = ta[s:s + n].to(device), where[s:s + n].to(device)
            acc.update(za, zb)
            if null_every and prev_za is not None and batch % null_every == 0:
                m = min(_n(prev_za), n)
                acc_sub.update(_head(za, m), _head(zb, m))
                acc_null.update(_head(prev_za, m), _head(zb, m))
            prev_za, batch = za, batch + 1
            for t, f, z, fired in ((tops[0], fires[0], za, fa), (tops[1], fires[1], zb, fb)):
                t.update(z, tok, rows)
                f += fired
            done += n
            if on_progress:
                on_progress(done, total)
    if done < 2:
        raise UniversalityError(f"the paired harvest gave {done} usable token(s); harvest more tokens")
    sub, null = (acc_sub.result(), acc_null.result()) if acc_null is not None and acc_null.n >= 2 else (None, None)
    return CodePass(acc.result(), tops[0].sets(), tops[1].sets(), tops[0].tokens.cpu(), tops[1].tokens.cpu(),
                    tops[0].rows.cpu(), tops[1].rows.cpu(), fires[0].cpu(), fires[1].cpu(), done, sub, null)


def _encode(sae, x_ND: torch.Tensor, codes: str) -> tuple[Codes | torch.Tensor, torch.Tensor]:
    """One batch's codes as ``codes`` asks (module doc) and per feature the tokens it fired on."""
    if codes == "sparse":
        z = Codes.encode(sae, x_ND)
        return z, torch.bincount(z.cols, minlength=z.width)
    pre_NS = sae.pre_acts(x_ND)
    return torch.relu(pre_NS), (sae.activate(pre_NS) > 0).sum(0)


def _n(z: Codes | torch.Tensor) -> int:
    return z.n if isinstance(z, Codes) else z.shape[0]


def _head(z: Codes | torch.Tensor, m: int) -> Codes | torch.Tensor:
    return z.head(m) if isinstance(z, Codes) else z[:m]
