"""Finding a gate: the SAE feature that says a prompt is triggered, and where it should fire.

A gated switch (``interventions.Gate``) acts only where feature f of an SAE of the fine-tuned model
exceeds a threshold. The feature and its threshold are chosen on disjoint prompts:

1. **Feature, on build prompts.** Each prompt scores max_t z_f(t) over its positions (the BOS and
   padding left out: the SAE never read them). Triggered prompts are the positives, clean requests
   the negatives; each feature's AUROC is the Mann-Whitney statistic of its scores (ties count one
   half; tested against scikit-learn's ``roc_auc_score``). The gate is the feature of the highest AUROC.
2. **Threshold, on selection prompts.** When the gate's scores separate the two kinds there, the
   threshold is the midpoint between the highest clean score and the lowest triggered score (a
   clean prompt then opens the gate nowhere); otherwise the score that maximises TPR - FPR
   (Youden's J), ties to the higher threshold. Both rates are stored beside it.

The report prompts, on which the gated switch is then judged (``gated_switch``), are used by
neither step. ``train_gate_sae`` trains the SAE the gate reads when the user brings none: a TopK SAE
of the fine-tuned model at the gate's hook, on the study's own mapper text (zoo documents and
triggered chat turns).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy.stats import rankdata

from sae_core.models.hooks import capture_at_hook
from sae_core.models.loading import keep_mask_BT, to_tokens
from sae_core.sae.base import SAE
from sae_core.sae.config import SAEConfig
from sae_core.steering.interventions import InterventionError
from sae_core.steering.mappers import TextActivations
from sae_core.training.data import memory_batches
from sae_core.training.loop import TrainerConfig, train_sae


@torch.no_grad()
def prompt_scores(model, sae: SAE, hook: str, prompts: list[str], batch_size: int = 32) -> np.ndarray:
    """``[n_prompts, d_sae]``: each feature's largest activation over each prompt's positions (BOS,
    special tokens and padding left out)."""
    if not prompts:
        raise InterventionError("no prompts to score a gate on")
    tok = model.tokenizer
    special = sorted(set(getattr(tok, "all_special_ids", []) or []))
    device = next(model.parameters()).device
    sae.eval()
    out = []
    with capture_at_hook(model, hook) as grab:
        for s in range(0, len(prompts), batch_size):
            ids = to_tokens(model, prompts[s:s + batch_size]).to(device)
            keep_BT = keep_mask_BT(ids, tok.pad_token_id, special, True).cpu()
            x_BTD = grab(ids)
            if x_BTD.shape[-1] != sae.cfg.d_in:
                raise InterventionError(f"the gate's SAE reads d_in={sae.cfg.d_in} but {hook} has width "
                                        f"{x_BTD.shape[-1]}: give an SAE of the fine-tuned model at {hook}")
            z_BTS = sae.encode(x_BTD.to(sae.device, sae.W_enc.dtype)).float().cpu()
            z_BTS[~keep_BT] = -np.inf
            out.append(z_BTS.amax(1).clamp_min(0))  # a prompt with no kept token scores 0
    return torch.cat(out).numpy()


def feature_aurocs(pos_PS: np.ndarray, neg_NS: np.ndarray) -> np.ndarray:
    """``[d_sae]``: each feature's AUROC for telling ``pos`` rows from ``neg`` rows by its score
    (Mann-Whitney U / (n_pos n_neg), ties averaged)."""
    n_p, n_n = len(pos_PS), len(neg_NS)
    if not n_p or not n_n:
        raise InterventionError("an AUROC needs prompts of both kinds (triggered and clean)")
    ranks = rankdata(np.concatenate([pos_PS, neg_NS]), axis=0)
    return (ranks[:n_p].sum(0) - n_p * (n_p + 1) / 2) / (n_p * n_n)


@dataclass(frozen=True)
class Threshold:
    value: float
    tpr: float      # triggered selection prompts that open the gate
    fpr: float      # clean selection prompts that open it
    rule: str       # "midpoint" (the kinds separate) or "youden"


def choose_threshold(pos: np.ndarray, neg: np.ndarray) -> Threshold:
    """The gate's threshold from its scores on selection prompts (module doc, step 2)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if pos.min() > neg.max():
        t, rule = (pos.min() + neg.max()) / 2, "midpoint"
    else:
        cands = np.unique(np.concatenate([pos, neg]))
        j = [(pos > c).mean() - (neg > c).mean() for c in cands]
        t, rule = float(cands[len(j) - 1 - int(np.argmax(j[::-1]))]), "youden"
    return Threshold(float(t), float((pos > t).mean()), float((neg > t).mean()), rule)


@dataclass(frozen=True)
class GateChoice:
    feature: int
    hook: str
    auroc: float                      # on build prompts
    threshold: Threshold              # from selection prompts
    top: list[tuple[int, float]]      # the ten best features by build AUROC
    n_build: tuple[int, int]          # (triggered, clean) build prompts
    n_select: tuple[int, int]

    def to_json(self) -> dict:
        return asdict(self)


def find_gate(model, sae: SAE, hook: str, build: tuple[list[str], list[str]],
              select: tuple[list[str], list[str]]) -> GateChoice:
    """The gate (module doc): ``build`` and ``select`` are (triggered, clean) prompt lists."""
    if set(build[0] + build[1]) & set(select[0] + select[1]):
        raise InterventionError("build and selection prompts overlap: the gate's feature and its threshold "
                                "must be chosen on disjoint prompts")
    pos_PS, neg_NS = prompt_scores(model, sae, hook, build[0]), prompt_scores(model, sae, hook, build[1])
    auroc_S = feature_aurocs(pos_PS, neg_NS)
    # ties (several features separate the build prompts) go to the widest gap between the kinds,
    # relative to the feature's scale: the threshold chosen later then has the most room
    scale_S = np.maximum(pos_PS.max(0), neg_NS.max(0)) + 1e-12
    order = np.lexsort(((neg_NS.max(0) - pos_PS.min(0)) / scale_S, -auroc_S))
    f = int(order[0])
    pos, neg = (prompt_scores(model, sae, hook, p)[:, f] for p in select)
    return GateChoice(f, hook, float(auroc_S[f]), choose_threshold(pos, neg),
                      [(int(j), float(auroc_S[j])) for j in order[:10]], (len(build[0]), len(build[1])),
                      (len(select[0]), len(select[1])))


@dataclass(frozen=True)
class GateSAEConfig:
    d_sae: int = field(default=512, metadata={"help": "Width of the gate's SAE, when one is trained."})
    k: int = field(default=16, metadata={"help": "k of the gate's TopK SAE, when one is trained."})
    train_tokens: int = field(default=400_000, metadata={
        "help": "Tokens the gate's SAE trains on (passes over the study's mapper text)."})
    batch_size: int = 1024
    seed: int = 0


def train_gate_sae(model, hook: str, texts: list[str], cfg: GateSAEConfig, model_name: str) -> SAE:
    """A TopK SAE of ``model`` at ``hook`` on ``texts`` (module doc)."""
    x_ND = TextActivations(texts).get(model, hook)
    scfg = SAEConfig(arch="topk", d_in=x_ND.shape[1], d_sae=cfg.d_sae, k=cfg.k, model_name=model_name,
                     hook_name=hook)
    tcfg = TrainerConfig(total_tokens=max(cfg.train_tokens, cfg.batch_size), batch_size=cfg.batch_size,
                         seed=cfg.seed)
    return train_sae(memory_batches(x_ND, cfg.batch_size), scfg, tcfg).sae
