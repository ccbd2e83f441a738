"""SAE configuration: one frozen dataclass, validated on construction, serialised with ``asdict``."""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Literal, Mapping, get_args

from sae_core.errors import SAECoreError

log = logging.getLogger(__name__)


class SAEConfigError(SAECoreError):
    """An SAE configuration that cannot work (K larger than d_sae, l < 1, unknown architecture)."""


Scoring = Literal["l2", "l2sq", "entropy"]
PoolRule = Literal["top", "sample"]
# Every architecture by name: the one list (the registry maps each to its class, CLI help and
# errors read it from here).
ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu", "sampled")
K_ARCHS = ("topk", "batchtopk", "sampled")  # the architectures whose rule reads k


def sae_label(settings: Mapping, detail: bool = False) -> str:
    """An SAE's name from its settings (``SAEConfig`` fields, an SAE artifact's meta or a sweep
    table row), naming only the settings its architecture reads: a TopK SAE was listed as
    "topk, l=4.0, l2" (issue #11). Short, for legends and progress inside one sweep, whose SAEs
    share k and the pool rule: ``sampled l=4 l2``, ``topk``. ``detail``, for pickers across runs:
    ``sampled k=16 l=4 l2 pool=top``, ``topk k=32``, ``relu l1=5``. Settings a record lacks
    (artifacts written before they were recorded) are left out."""
    get = settings.get
    arch = get("arch") or "?"
    parts = [arch]
    if detail and arch in K_ARCHS and get("k") is not None:
        parts.append(f"k={get('k')}")
    if arch == "sampled":
        parts += [f"l={get('l'):g}", get("scoring")]
        if detail and get("pool_rule"):
            parts.append(f"pool={get('pool_rule')}")
    if detail and arch == "relu" and get("l1_coeff") is not None:
        parts.append(f"l1={get('l1_coeff'):g}")
    return " ".join(parts)


def require_partial_pool(k: int, l: float, d_sae: int) -> None:
    """Refuse a Sampled-SAE whose pool of K*l latents would hold every latent: it trains as plain
    BatchTopK under a Sampled-SAE's name (issue #28). The sweep, ``sae-core train`` and the
    Sampled-SAE page all check new runs here, before any harvest or training."""
    if k * l > d_sae:
        raise SAEConfigError(f"K·l = {k}·{l:g} = {k * l:g} exceeds d_sae = {d_sae}: the pool would hold "
                             "every latent and the run would be plain BatchTopK; lower l or raise d_sae")


@dataclass(frozen=True)
class SAEConfig:
    """Architecture and provenance of one SAE.

    Fields used only by some architectures are ignored by the others (``k`` by ``relu``, ``l``,
    ``scoring`` and ``pool_rule`` by everything but ``sampled``).
    """
    arch: str                       # a name in ARCHITECTURES
    d_in: int                       # width of the hooked activation
    d_sae: int                      # number of latents
    # active latents per token (TopK) / on average (BatchTopK)
    k: int = field(default=32, metadata={"help": "Active latents per token (TopK family)."})
    l: float = field(default=4.0, metadata={"help": "Sampled-SAE: the pool holds K*l latents."})
    # Sampled-SAE: how latent columns are scored (see sampled.py)
    scoring: Scoring = field(default="l2", metadata={"help": "Sampled-SAE scoring rule: l2 | l2sq | entropy."})
    pool_rule: PoolRule = field(default="top", metadata={"help": "Sampled-SAE pool: top | sample."})
    l1_coeff: float = 5.0           # ReLU SAE: sparsity penalty weight
    threshold_momentum: float = 0.99  # BatchTopK family: EMA of the inference threshold
    model_name: str = ""
    hook_name: str = ""
    dtype: str = "float32"
    extra: dict = field(default_factory=dict)  # free-form provenance (dataset, seed, ...)

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise SAEConfigError(f"unknown SAE architecture {self.arch!r}; choose one of "
                                 f"{sorted(ARCHITECTURES)}")
        if self.d_in <= 0 or self.d_sae <= 0:
            raise SAEConfigError(f"d_in and d_sae must be positive (got {self.d_in}, {self.d_sae})")
        if self.arch in K_ARCHS and not 0 < self.k <= self.d_sae:
            raise SAEConfigError(f"k={self.k} must be between 1 and d_sae={self.d_sae}; lower k or "
                                 "widen the SAE")
        if self.arch == "sampled":
            if not (self.l >= 1 and math.isfinite(self.l)):
                # l < 1 used to become l = 1 silently (pool_size clamps to K): two "different"
                # points of a sweep were the same SAE (issue #11)
                raise SAEConfigError(f"l={self.l} is not allowed: l must be a finite number >= 1 "
                                     "(the pool holds K*l latents; l=1 means K latents, the smallest pool)")
            if self.scoring not in get_args(Scoring):
                raise SAEConfigError(f"scoring={self.scoring!r}; choose "
                                     f"{' or '.join(map(repr, get_args(Scoring)))}")
            if self.pool_rule not in get_args(PoolRule):
                raise SAEConfigError(f"pool_rule={self.pool_rule!r}; choose "
                                     f"{' or '.join(map(repr, get_args(PoolRule)))}")
            if self.k * self.l > self.d_sae:
                # Documented choice: clamp, since a pool of every latent is exactly BatchTopK. Kept
                # (not refused) so that SAEs saved with such a pool still load; new runs are refused
                # before any work by ``require_partial_pool`` (issue #28).
                log.warning("K*l = %g exceeds d_sae = %d; the pool is clamped to all latents "
                            "(plain BatchTopK)", self.k * self.l, self.d_sae)

    @property
    def pool_size(self) -> int:
        """Sampled-SAE pool size K*l, clamped to d_sae (where it equals plain BatchTopK)."""
        return min(self.d_sae, max(self.k, round(self.k * self.l)))

    @property
    def label(self) -> str:
        """A short name for progress text and legends: ``sampled l=4 l2``, ``batchtopk`` (``sae_label``)."""
        return sae_label(self.to_json())

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "SAEConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})
