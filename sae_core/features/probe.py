"""The "try it" box: one feature's activation on every token of a text the user types.

The text goes through exactly the path the index took (``to_tokens`` with one BOS, the model up to
the hook, the SAE at inference), so a token's value here equals what the index would record for it.
The BOS is not shown (the index never counts it either).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sae_core.models.hooks import capture_at_hook
from sae_core.features.config import FeatureIndexError
from sae_core.models.loading import to_tokens
from sae_core.models.tokens import display_tokens
from sae_core.sae.base import SAE

MAX_TEXT_TOKENS = 512


@dataclass(frozen=True)
class TextActivations:
    tokens: list[str]
    acts: list[float]
    truncated_from: int | None  # the text's length in tokens when it was cut to the limit
    spaced: bool = True         # shown with spaces between tokens (word-level; ``models.tokens``)


def check_feature_index(sae: SAE, feature: int) -> None:
    if not 0 <= feature < sae.cfg.d_sae:
        raise FeatureIndexError(f"feature {feature} is out of range: this SAE has features "
                                f"0..{sae.cfg.d_sae - 1}")


@torch.no_grad()
def feature_acts_on_text(model, sae: SAE, hook: str, text: str, feature: int,
                         max_tokens: int = MAX_TEXT_TOKENS) -> TextActivations:
    """Per-token activations of ``feature`` on ``text`` (cut to ``max_tokens`` tokens, and to the
    model's context, with ``truncated_from`` saying so)."""
    check_feature_index(sae, feature)
    if not text or not text.strip():
        raise FeatureIndexError("the text is empty: type a sentence to see where the feature fires")
    limit = min(max_tokens, int(getattr(model.cfg, "n_ctx", max_tokens) or max_tokens))
    n_text = len(model.tokenizer(text, add_special_tokens=False)["input_ids"])  # to_tokens cuts at n_ctx
    truncated_from = n_text if n_text + 1 > limit else None
    tokens_1T = to_tokens(model, text)[:, :limit]
    sae.eval()
    with torch.inference_mode(), capture_at_hook(model, hook) as capture:
        acts_1TD = capture(tokens_1T.to(next(model.parameters()).device))
        if acts_1TD.shape[-1] != sae.cfg.d_in:
            raise FeatureIndexError(f"the SAE reads d_in={sae.cfg.d_in} but {hook} has width "
                                    f"{acts_1TD.shape[-1]}; choose the model and hook this SAE was trained on")
        z_T = sae.encode(acts_1TD.to(sae.device, sae.W_enc.dtype))[0, :, feature].float().cpu()
    shown, spaced = display_tokens(model.tokenizer, tokens_1T[0].tolist()[1:])
    return TextActivations(shown, z_T[1:].tolist(), truncated_from, spaced)
