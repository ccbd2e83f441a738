"""The unembedding as a feature's direct logit effect sees it: through the final norm's linear part.

A direction ``d`` written into the residual stream reaches the logits through ``ln_final`` and
``W_U``. Neuronpedia's dashboards (SAEDashboard, sae_vis) compute ``d @ W_U`` on a transformer-lens
model loaded with ``fold_ln``, ``center_writing_weights`` and ``center_unembed``, so their W_U
already holds the norm's scale and centring. ``unembed_through_final_norm`` builds the same matrix
from an unfolded model (a ``TransformerBridge`` keeps ``ln_final`` and the raw W_U):

    M = diag(w) W_U                         (w: ln_final's weight; 1 when it has none)
    LayerNorm only:  M <- M - mean_i M[i]   (the norm subtracts the mean over d_model first:
                                             (d - mean(d)) . M == d . (M - mean_i M[i]))
    M <- M - mean_v M[:, v]                 (centre_unembed: a constant over the vocabulary
                                             changes no probability)

The one factor left out is the norm's 1/sigma, which depends on the token's residual: effects
are comparable within a model, as Neuronpedia's are. ``RAW`` names the old basis, ``d @ W_U``,
for indexes built before this (their info lacks ``logit_basis``).
"""
from __future__ import annotations

import torch

FOLDED = "ln_final folded into W_U, centred (as Neuronpedia)"
RAW = "raw W_U (final norm ignored)"


def _final_norm(model):
    """The final norm's per-dimension scale (None: no norm) and whether it centres (LayerNorm)."""
    norm = getattr(model, "ln_final", None)
    if norm is None:
        return None, False
    inner = getattr(norm, "_original_component", norm)
    kind = type(inner).__name__.lower()
    normalization = str(getattr(getattr(model, "cfg", None), "normalization_type", "") or "").upper()
    centres = "rms" not in kind and not normalization.startswith("RMS")
    weight = getattr(inner, "weight", None)
    if not centres and weight is not None:
        weight = _rms_scale(inner, weight)
    return weight, centres


def _rms_scale(norm, weight: torch.Tensor) -> torch.Tensor:
    """An RMSNorm's scale as it applies it, read from the module itself: its output on a row of
    ones (RMS 1). Not ``weight`` as stored: Gemma's norms multiply by ``1 + weight`` (a stored
    weight of 0 is the identity), which read as ``weight`` made every logit effect 0."""
    return norm(torch.ones(1, weight.shape[0], dtype=weight.dtype, device=weight.device))[0]


@torch.no_grad()
def unembed_through_final_norm(model) -> torch.Tensor:
    """``[d_model, d_vocab]`` float32 on the CPU: W_U with the final norm folded in (module doc)."""
    W_U = model.W_U.detach().float().cpu()
    weight, centres = _final_norm(model)
    M = W_U if weight is None else weight.detach().float().cpu()[:, None] * W_U
    if centres:
        M = M - M.mean(dim=0, keepdim=True)
    return M - M.mean(dim=1, keepdim=True)
