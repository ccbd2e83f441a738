"""Sparse probing, as SAEBench computes it (``sae_bench/evals/sparse_probing``; the metric the
Sampled-SAE paper, arXiv 2508.21324, reports downstream).

Per binary task (``probing_tasks``):
1. features: token-level tasks take the hook's activation (or the SAE's code of it) at each
   labelled token; sequence-level tasks the mean over the text's tokens, BOS and padding excluded,
   of the activations, or of the SAE's codes of each token (SAEBench encodes every token, then
   means: ``get_sae_meaned_activations``);
2. balance: as many examples of each class, the larger class subsampled (seeded), per split;
3. select: the k latents with the largest |mean(positive) - mean(negative)| on the training split
   (``get_top_k_mean_diff_mask``), k = 1, 2, 5, 20 by default;
4. probe: scikit-learn's ``LogisticRegression`` (L2, C = 1, max_iter = 1000, as SAEBench's
   ``train_sklearn_probe``) on those latents; report test accuracy.

Beside the SAE's rows: the same probe on the raw activations (all dimensions, and their top k by
the same rule) and a random-latent baseline (k latents drawn among those active on the training
split, accuracy averaged over ``random_draws`` draws). Differences from SAEBench: its full-width
probes train in torch on a GPU (here scikit-learn, the same objective); its datasets are
professions, sentiment, languages and code, here the zoo tasks or a user's labels file; its
training / test sizes are 4000 / 1000 per task, here ``ProbingConfig.examples`` per class.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sae_core.evaluation.config import ProbingConfig
from sae_core.evaluation.probing_tasks import ProbeExample, ProbeTask, ProbingError
from sae_core.io import json_safe
from sae_core.models.hooks import capture
from sae_core.models.loading import keep_mask_BT, to_tokens

@dataclass(frozen=True)
class TaskActivations:
    """One task's examples at a hook: ``acts_MD`` rows (a token-level example is one row, a
    sequence-level one all its tokens' rows), ``example_M`` the example each row belongs to,
    ``label_E`` and ``train_E`` (training split) per example, already class-balanced."""
    task: str
    level: str
    acts_MD: torch.Tensor
    example_M: torch.Tensor
    label_E: np.ndarray
    train_E: np.ndarray


def _last_token_of_spans(offsets: list[tuple[int, int]], spans) -> list[tuple[int, int]]:
    """(token index, label) of the last token overlapping each span (``offsets``: the tokens'
    character ranges, without the BOS)."""
    out = []
    for start, end, label in spans:
        hits = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
        if hits:
            out.append((hits[-1], label))
    return out


def _balanced(label_E: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``cap`` examples of each class, as many of each (SAEBench balances)."""
    pos, neg = np.flatnonzero(label_E == 1), np.flatnonzero(label_E == 0)
    n = min(len(pos), len(neg), cap)
    if n < 2:
        raise ProbingError(f"only {len(pos)} positive and {len(neg)} negative examples; a probe needs at "
                           "least 2 of each (more documents, or a task with both labels)")
    return np.sort(np.concatenate([rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)]))


@torch.no_grad()
def _split_rows(model, hook: str, examples: list[ProbeExample], level: str, batch: int = 32
                ) -> tuple[list[torch.Tensor], np.ndarray]:
    """Per example (token-level: per labelled token), the hook's rows ``[rows, d]`` and labels."""
    tok = model.tokenizer
    rows, labels = [], []
    for i in range(0, len(examples), batch):
        chunk = examples[i:i + batch]
        tokens_BT = to_tokens(model, [e.text for e in chunk])
        acts_BTD = capture(model, tokens_BT, [hook])[hook].float().cpu()
        keep_BT = keep_mask_BT(tokens_BT, tok.pad_token_id, [], exclude_special=False)
        keep_BT[:, 0] = False  # the BOS: never a feature (SAEBench masks BOS, pad and EOS)
        for b, e in enumerate(chunk):
            if level == "sequence":
                rows.append(acts_BTD[b][keep_BT[b].cpu()])
                labels.append(e.label)
                continue
            offsets = tok(e.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            for t, label in _last_token_of_spans(offsets, e.spans):
                if t + 1 < tokens_BT.shape[1] and keep_BT[b, t + 1]:
                    rows.append(acts_BTD[b, t + 1][None])  # +1: the BOS
                    labels.append(label)
    return rows, np.asarray(labels)


def task_activations(model, hook: str, task: ProbeTask, cfg: ProbingConfig) -> TaskActivations:
    """The model's side of a task, built once per (model, hook) and shared by every SAE."""
    split = task.build(cfg.seed, cfg.documents)
    rng = np.random.default_rng(cfg.seed)
    parts = []
    for is_train, examples in ((True, split.train), (False, split.test)):
        rows, label_E = _split_rows(model, hook, examples, task.level)
        keep = _balanced(label_E, cfg.examples, rng)
        parts.append(([rows[i] for i in keep], label_E[keep], np.full(len(keep), is_train)))
    rows = parts[0][0] + parts[1][0]
    example_M = torch.repeat_interleave(torch.arange(len(rows)), torch.tensor([len(r) for r in rows]))
    return TaskActivations(task.name, task.level, torch.cat(rows), example_M,
                           np.concatenate([parts[0][1], parts[1][1]]), np.concatenate([parts[0][2], parts[1][2]]))


def example_features(codes_MF: torch.Tensor, example_M: torch.Tensor, n_examples: int) -> np.ndarray:
    """``[E, F]``: the mean of each example's rows (a token-level example has one row)."""
    sums_EF = torch.zeros(n_examples, codes_MF.shape[1], dtype=torch.float64)
    sums_EF.index_add_(0, example_M, codes_MF.double())
    counts_E = torch.bincount(example_M, minlength=n_examples).clamp_min(1).double()
    return (sums_EF / counts_E[:, None]).numpy()


def top_k_mean_diff(x_EF: np.ndarray, y_E: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` columns with the largest |mean over positives - mean over negatives|, largest
    first (a stable sort: ties go to the lower column)."""
    diff_F = np.abs(x_EF[y_E == 1].mean(0) - x_EF[y_E == 0].mean(0))
    return np.argsort(-diff_F, kind="stable")[:k]


def probe_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """SAEBench's ``train_sklearn_probe``: L2 logistic regression, C = 1, 1000 iterations. Its
    convergence warnings are silenced: SAEBench's probes stop at the same 1000 iterations."""
    # imported here: scikit-learn takes ~1.7 s to import, which every CLI command would pay
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if x_train.shape[1] == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe = LogisticRegression(C=1.0, max_iter=1000).fit(x_train, y_train)
    return float((probe.predict(x_test) == y_test).mean())


def _sparse_probe(x_EF: np.ndarray, data: TaskActivations, columns: np.ndarray) -> float:
    tr, te = data.train_E, ~data.train_E
    return probe_accuracy(x_EF[tr][:, columns], data.label_E[tr], x_EF[te][:, columns], data.label_E[te])


@dataclass(frozen=True)
class ProbingResult:
    """Test accuracies per task: ``rows`` of task, k (None: every dimension), and the accuracies
    of the SAE's top-k latents, the raw activations (all dimensions / top k of them) and random
    latents; ``mean`` the means over tasks by column name (``sae_top_1``, ``llm_top_5``, ...)."""
    rows: list[dict]
    mean: dict[str, float | None]
    tasks: list[str]

    def to_dict(self) -> dict:
        return json_safe(asdict(self))


@torch.no_grad()
def sparse_probing(sae, data: list[TaskActivations], cfg: ProbingConfig) -> ProbingResult:
    """Probe every task with the SAE's codes (``sae.encode``, inference rule) and the baselines."""
    sae.eval()
    rows = []
    for task in data:
        n = len(task.label_E)
        codes_MF = sae.encode(task.acts_MD.to(sae.device, sae.W_enc.dtype)).float().cpu()
        x_sae, x_llm = example_features(codes_MF, task.example_M, n), example_features(task.acts_MD, task.example_M, n)
        tr, y_tr = task.train_E, task.label_E[task.train_E]
        alive = np.flatnonzero((x_sae[tr] != 0).any(0))
        rng = np.random.default_rng(cfg.seed)
        rows.append({"task": task.task, "k": None, "llm": _sparse_probe(x_llm, task, np.arange(x_llm.shape[1])),
                     "sae": None, "random": None})
        for k in cfg.ks:
            randoms = [_sparse_probe(x_sae, task, rng.choice(alive, min(k, len(alive)), replace=False))
                       for _ in range(cfg.random_draws)] if len(alive) else [float("nan")]
            rows.append({"task": task.task, "k": k,
                         "sae": _sparse_probe(x_sae, task, top_k_mean_diff(x_sae[tr], y_tr, k)),
                         "llm": _sparse_probe(x_llm, task, top_k_mean_diff(x_llm[tr], y_tr, k)),
                         "random": float(np.mean(randoms))})
    mean = {"llm_all": _mean(r["llm"] for r in rows if r["k"] is None)}
    for k in cfg.ks:
        for col in ("sae", "llm", "random"):
            mean[f"{col}_top_{k}"] = _mean(r[col] for r in rows if r["k"] == k)
    return ProbingResult(rows, mean, [t.task for t in data])


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None
