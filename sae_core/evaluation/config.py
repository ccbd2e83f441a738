"""The evaluation's settings, one frozen dataclass per metric and one for a whole evaluation (light
to import: the CLI builds its options from them before any model or scikit-learn is loaded)."""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sae_core.errors import SAECoreError
from sae_core.evaluation.probing_tasks import ZOO_TASKS, ProbingError, read_labels_file

DEFAULT_KS = (1, 2, 5, 20)
METRICS = ("probing", "absorption", "lottery")


@dataclass(frozen=True)
class ProbingConfig:
    tasks: tuple[str, ...] = field(default=tuple(ZOO_TASKS), metadata={"help": "Comma-separated zoo probing tasks."})
    ks: tuple[int, ...] = field(default=DEFAULT_KS, metadata={"help": "Comma-separated numbers of latents per probe."})
    # examples per class and split (SAEBench: 4000 train / 1000 test per task, on hub models)
    examples: int = field(default=300, metadata={"help": "Probing examples per class and split."})
    documents: int = 160          # documents per split from which the examples are drawn
    random_draws: int = 5         # draws of the random-latent baseline, averaged
    seed: int = 0

    def __post_init__(self):
        if unknown := [t for t in self.tasks if t not in ZOO_TASKS]:
            raise ProbingError(f"unknown probing task(s) {unknown}; choose among {sorted(ZOO_TASKS)}")
        if not self.ks or any(not isinstance(k, int) or k < 1 for k in self.ks):
            raise ProbingError(f"ks={list(self.ks)}: each k must be a whole number >= 1")
        for name in ("examples", "documents", "random_draws"):
            if getattr(self, name) < 1:
                raise ProbingError(f"{name}={getattr(self, name)} must be >= 1")


@dataclass(frozen=True)
class AbsorptionConfig:
    """Settings of the absorption eval; SAEBench's defaults where it has the setting."""
    n_docs: int = 300          # generated documents per split (training, test)
    max_per_word: int = 8      # occurrences kept per word and split (frequent words would dominate)
    min_words: int = 5         # letters with fewer distinct words are not scored
    probe_l2: float = 1e-4     # ground-truth probe weight decay (SAEBench probing.py)
    min_probe_f1: float = 0.6  # letters whose probe test F1 is not above this are left out (min_GT_probe_f1)
    max_k: int = 10            # largest k of the k-sparse probes (max_k_value)
    f1_jump: float = 0.03      # F1 gain that adds a main latent (f1_jump_threshold)
    k_sparse_l1: float = 0.01  # L1 of the latent-ranking probe (k_sparse_probe_l1_decay)
    fraction_cos: float = 0.1  # min cos(probe, W_dec) of an absorber (ABSORPTION_FRACTION_PROBE_COS_THRESHOLD)
    full_cos: float = 0.025    # min cos of the top latent, full absorption (FULL_ABSORPTION_PROBE_COS_THRESHOLD)
    # the absorbers' share of the probe projection (ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD)
    proportion: float = 0.4
    max_absorbers: int = 3     # latents that may share an absorption (ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS)
    seed: int = 0

    def __post_init__(self):
        for name in ("n_docs", "max_per_word", "min_words", "max_k", "max_absorbers", "seed"):
            v, lo = getattr(self, name), 0 if name == "seed" else 1
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise SAECoreError(f"absorption {name} = {v!r} must be a whole number >= {lo}")
        # name -> (lowest, highest, whether the lowest is excluded)
        ranges = {"probe_l2": (0.0, math.inf, True), "k_sparse_l1": (0.0, math.inf, True),
                  "min_probe_f1": (0.0, 1.0, False), "f1_jump": (0.0, 1.0, False),
                  "fraction_cos": (-1.0, 1.0, False), "full_cos": (-1.0, 1.0, False),
                  "proportion": (0.0, 1.0, True)}
        for name, (lo, hi, open_lo) in ranges.items():
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    and (v > lo if open_lo else v >= lo) and v <= hi):
                raise SAECoreError(f"absorption {name} = {v!r} must be a finite number in "
                                   f"{'(' if open_lo else '['}{lo:g}, {hi:g}]")


METRICS = ("probing", "absorption", "lottery")


@dataclass(frozen=True)
class EvaluationConfig:
    metrics: tuple[str, ...] = field(default=METRICS, metadata={"help": "Comma-separated: probing, absorption, lottery."})
    probing: ProbingConfig = ProbingConfig()
    absorption: AbsorptionConfig = AbsorptionConfig()
    # a user's sequence-level task: .jsonl lines {"text": ..., "label": ...} with two labels
    labels_file: str = field(default="", metadata={"help": "A .jsonl file of text and label: one more probing task."})

    def __post_init__(self):
        if not self.metrics or any(m not in METRICS for m in self.metrics):
            raise SAECoreError(f"metrics={list(self.metrics)}; choose one or more of {', '.join(METRICS)}")
        if self.labels_file:
            read_labels_file(self.labels_file)  # refused now, with its line, before any model pass

    def metric_config(self, metric: str) -> dict:
        """What a stored result of ``metric`` depends on (its artifact name hashes this)."""
        if metric == "probing":
            digest = hashlib.sha256(Path(self.labels_file).expanduser().read_bytes()).hexdigest() \
                if self.labels_file else None
            return {"config": asdict(self.probing), "labels_file": digest}
        if metric == "absorption":
            return {"config": asdict(self.absorption)}
        return {}


