"""The feature index's build config and its error type."""
from __future__ import annotations

from dataclasses import dataclass, field

from sae_core.errors import SAECoreError


class FeatureIndexError(SAECoreError):
    """A feature index that cannot be built or read, or that belongs to another SAE."""


@dataclass(frozen=True)
class IndexConfig:
    """How an index is built. Every field but ``batch_size`` and ``checkpoint_every`` changes the
    result (see ``result_fields``), so those go into the index's name."""
    # corpus tokens to stream (approximate: whole documents)
    n_tokens: int = field(default=100_000, metadata={"help": "Corpus tokens to stream through model and SAE."})
    context_size: int = 64         # tokens per sequence, BOS included
    batch_size: int = field(default=32, metadata={"help": "Sequences per forward pass."})
    corpus_seed: int = 1           # zoo corpus stream (the demo SAEs train on seed 0)
    exclude_special: bool = True   # BOS/pad/unk never count as activating tokens
    n_top: int = field(default=20, metadata={"help": "Top activating examples kept per feature."})
    n_samples: int = 24            # uniform sample of nonzero activations, grouped in quantile bins
    n_quantiles: int = 4
    before: int = 5                # context window around an example's token
    after: int = 5
    hist_bins: int = 40            # activation histogram bins (even)
    n_logits: int = 10             # promoted / suppressed tokens shown
    logit_hist_bins: int = 30
    n_promoters: int = 20          # per token: features that promote it most (search)
    n_nearest: int = 10
    feature_map: bool = field(default=True, metadata={"help": "Compute the UMAP feature map."})  # of decoder rows
    seed: int = 0                  # sampling keys and UMAP
    checkpoint_every: int = 50     # batches

    def __post_init__(self):
        for name in ("n_tokens", "context_size", "batch_size", "n_top", "n_samples", "n_quantiles",
                     "hist_bins", "n_logits", "logit_hist_bins", "n_promoters", "n_nearest",
                     "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise FeatureIndexError(f"IndexConfig.{name} must be positive, got {getattr(self, name)}")
        if self.context_size < 2 or self.before < 0 or self.after < 0 or self.hist_bins % 2:
            raise FeatureIndexError("IndexConfig: context_size must be >= 2, before/after >= 0 and "
                                    f"hist_bins even (got {self.context_size}, {self.before}, "
                                    f"{self.after}, {self.hist_bins})")

    @property
    def window(self) -> int:
        return self.before + 1 + self.after

    def result_fields(self) -> dict:
        """The fields that change the index (its name hashes these)."""
        from dataclasses import asdict

        return {k: v for k, v in asdict(self).items() if k not in ("batch_size", "checkpoint_every")}
