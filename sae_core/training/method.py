"""The Sampled-SAE sweep's Method table (issue #29): each training step as dictionary_learning's
BatchTopK trainer does it (the reference: ``dictionary_learning/trainers/batch_top_k.py``,
``BatchTopKTrainer``) and what the sweep in hand did, read from its stored ``SweepConfig``.

The Sampled-SAE paper (arXiv 2508.21324) has no public code and only its abstract is at hand: its
steps are this project's reading (``sae/sampled.py`` documents each rule), so there is no paper
mode to switch to; the trainer is the part a reference exists for.
"""
from __future__ import annotations

from sae_core.training.config import TrainerConfig

# dictionary_learning's BatchTopKTrainer defaults, as DESIGN.md section 4 lists them
REFERENCE = {"warmup_steps": 1000, "grad_clip": 1.0, "threshold_beta": 0.999, "threshold_start": 1000,
             "dead_tokens": 10_000_000, "aux_coeff": 1 / 32}


def method_rows(sweep: dict) -> list[dict[str, str]]:
    """Rows ``{step, dictionary_learning (reference), this sweep}`` for a sweep's stored config
    (``sweep.json``)."""
    fields = {f: sweep[f] for f in ("tokens", "batch_size", "lr", "seed", "device") if f in sweep}
    t = TrainerConfig(total_tokens=fields.pop("tokens"), **fields)
    lr = (f"{t.lr:g}" if t.lr is not None else
          f"2e-4 / sqrt(d_sae / 2^14) = {t.lr_for(sweep['d_sae']):.3g} at d_sae {sweep['d_sae']}")
    clip = "none" if t.grad_clip is None else f"global norm {t.grad_clip:g}"
    thr = (f"the EMA of the smallest kept activation from step {t.threshold_start} (beta: the SAE's "
           "threshold_momentum)" if t.threshold == "ema" else
           "calibrated at the final weights: the training rule's cut-off averaged over fresh batches (the EMA lags "
           "the weights and left inference L0 below k in short runs)")
    return [
        {"step": "optimiser and lr", "dictionary_learning (reference)": "Adam, lr 2e-4 / sqrt(d_sae / 2^14)",
         "this sweep": f"Adam, lr {lr}"},
        {"step": "schedule", "dictionary_learning (reference)": f"{REFERENCE['warmup_steps']} warm-up steps, no decay",
         "this sweep": f"{t.warmup_steps} warm-up steps of {t.steps}; linear decay over the last "
                       f"{100 * t.decay_fraction:g}% (a run of {t.steps} steps is shorter than the reference's "
                       "warm-up)"},
        {"step": "gradient clipping", "dictionary_learning (reference)": f"global norm {REFERENCE['grad_clip']:g}",
         "this sweep": f"{clip} (measured better on the zoo: bench/sae_trainer_variants.py)"},
        {"step": "inference threshold",
         "dictionary_learning (reference)": f"EMA (beta {REFERENCE['threshold_beta']}) of the smallest kept "
                                            f"activation from step {REFERENCE['threshold_start']}",
         "this sweep": thr},
        {"step": "AuxK", "dictionary_learning (reference)":
            f"k_aux d_in / 2, coefficient 1/32, dead after {REFERENCE['dead_tokens']:,} tokens, every token",
         "this sweep": f"k_aux d_in / 2, coefficient {t.aux_k_coeff:.4g}, dead after {t.dead_window:,} tokens "
                       f"(1/16 of the run, at most 1M), on {100 * t.aux_fraction:g}% of each batch's tokens"},
        {"step": "initialisation", "dictionary_learning (reference)":
            "random unit decoder rows, W_enc = W_dec^T, b_dec at the geometric median",
         "this sweep": ("decoder rows from data rows (" if t.decoder_init == "data" else "random unit rows (")
                       + "W_enc = W_dec^T), b_dec at the geometric median"},
        {"step": "Sampled-SAE pool", "dictionary_learning (reference)": "-",
         "this sweep": f"score each latent over the batch ({', '.join(sweep['scorings'])}), keep "
                       f"{'the K·l best' if sweep['pool_rule'] == 'top' else 'K·l drawn by score'}, BatchTopK "
                       "inside the pool (the paper's code is not public: sae/sampled.py documents this reading)"},
        {"step": "mode", "dictionary_learning (reference)": "-",
         "this sweep": "no paper mode: the Sampled-SAE authors' code is not public"},
    ]
