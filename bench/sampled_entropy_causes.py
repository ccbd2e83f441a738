"""Issue #11: why entropy-scored Sampled-SAEs collapsed, one row per candidate cause.

Trains Sampled-SAEs in lockstep on the demo sweep's data and settings (zoo:tiny-a
blocks.1.hook_resid_post, 100k harvested tokens, K=16, d_sae=512, batch 1024, 1M tokens) and prints,
per SAE: held-out FVU (inference rule), L0, the training error's best and last values, the largest
AuxK loss, the mean pool churn, the final b_dec norm (scaled units) and the fraction of pool
columns with under 1% of the pool's median mass (near-zero columns).

Modes:
  fixed     the current rule (silence counts towards "dead" only inside the pool)
  before    the old rule: every latent silent for the dead window gets AuxK
  no-aux    AuxK off (aux_k_coeff=0)
  ema       pools chosen on scores smoothed over batches (EMA 0.9), to test pool churn
  seeds     the fixed rule at l = 1, 2, 4, 8, 16 for seeds 0-4

    .venv/bin/python bench/sampled_entropy_causes.py fixed before no-aux ema seeds
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from sae_core.activations import ActivationStore, harvest_to_workspace
from sae_core.sae import sampled
from sae_core.sae.config import SAEConfig
from sae_core.training.data import open_split
from sae_core.training.job import EVAL_BATCH, evaluate_sae
from sae_core.training.loop import TrainerConfig, train_many
from sae_core.workspace import Workspace

_stats: dict[int, dict] = {}
_orig_pool, _orig_scores, _orig_eligible = (sampled.SampledSAE._pool, sampled.latent_scores,
                                           sampled.SampledSAE.aux_eligible)
_ema: dict[str, torch.Tensor] = {}


def _pool_with_stats(self, acts_NS):
    pool_P = _orig_pool(self, acts_NS)
    if self.training:
        st = _stats.setdefault(id(self), {})
        mass_P = torch.relu(acts_NS[:, pool_P]).sum(0)
        st["tiny"] = (mass_P < 0.01 * mass_P.median()).float().mean().item()
        st["b_dec"] = self.b_dec.norm().item()
    return pool_P


def _smoothed_scores(acts_NS, scoring, m=0.9):
    s_S = torch.nan_to_num(_orig_scores(acts_NS, scoring), neginf=0.0)
    prev = _ema.get(scoring)
    _ema[scoring] = s_S if prev is None else m * prev + (1 - m) * s_S
    return _ema[scoring]


def run(split, ls, seed=0, **trainer):
    cfgs = [SAEConfig(arch="sampled", d_in=128, d_sae=512, k=16, l=l, scoring="entropy") for l in ls]
    tcfg = TrainerConfig(total_tokens=1_000_000, batch_size=1024, seed=seed, **trainer)
    for cfg, r in zip(cfgs, train_many(split.batches(1024), cfgs, tcfg)):
        m = evaluate_sae(r.sae, split.eval_batches(EVAL_BATCH), EVAL_BATCH)
        h, st = r.history, _stats.get(id(r.sae), {})
        churn = [e.pool_churn for e in h if e.pool_churn is not None]
        print(f"{seed:4} {cfg.l:4g} {m['fvu']:7.3f} {m['l0']:5.1f} {min(e.sq_err for e in h):8.1f} "
              f"{h[-1].sq_err:8.1f} {max(e.aux for e in h):7.2f} {sum(churn) / len(churn):6.3f} "
              f"{st.get('b_dec', float('nan')):6.2f} {st.get('tiny', float('nan')):5.2f}", flush=True)


def main(modes: list[str]) -> None:
    ws = Workspace(Path(tempfile.mkdtemp(prefix="bench-entropy-")))
    acts = harvest_to_workspace(ws, "zoo:tiny-a", "blocks.1.hook_resid_post", n_tokens=100_000, seed=0)
    split = open_split(ActivationStore.open(acts.path))
    sampled.SampledSAE._pool = _pool_with_stats
    for mode in modes:
        print(f"\n## {mode}\nseed    l     FVU    L0  err min  err end aux max  churn  b_dec  tiny")
        sampled.latent_scores = _smoothed_scores if mode == "ema" else _orig_scores
        sampled.SampledSAE.aux_eligible = (lambda self: None) if mode == "before" else _orig_eligible
        _ema.clear()
        if mode == "seeds":
            for seed in range(5):
                run(split, (1.0, 2.0, 4.0, 8.0, 16.0), seed=seed)
        elif mode == "ema":  # one SAE at a time: the smoothed scores are one module-level state
            for l in (1.0, 2.0, 4.0):
                _ema.clear()
                run(split, (l,))
        elif mode in ("fixed", "before", "no-aux"):
            run(split, (1.0, 2.0, 4.0), **({"aux_k_coeff": 0.0} if mode == "no-aux" else {}))
        else:
            raise SystemExit(f"unknown mode {mode!r}; see the module doc")


if __name__ == "__main__":
    main(sys.argv[1:] or ["fixed", "before", "no-aux", "ema"])
