"""Feature absorption (Chanin et al. 2024, "A is for Absorption", arXiv 2409.14507) as SAEBench
scores it (adamkarvonen/SAEBench, ``sae_bench/evals/absorption/``), on word occurrences in context.

SAEBench, step by step (constants from ``eval_config.py`` and ``feature_absorption.py``):

1. Ground-truth probe (``probing.py``): the residual at a word inside an in-context prompt
   ("{word} has the first letter:", 10 examples, read at position -6), for every alphabetic token;
   the vocabulary is split 80/20 *by word*. One-vs-rest over 26 letters: a BCE probe per letter with
   pos_weight = negatives / positives, Adam lr 1e-2, weight decay 1e-4, 50 epochs.
2. k-sparse probing (``k_sparse_probing.py``): on the SAE codes of the training words an L1 probe
   per letter (l1 0.01 on the weights, 50 epochs) ranks the latents by signed weight; for
   k = 1..10 (``max_k_value``) the top k latents feed ``LogisticRegression(max_iter=500,
   class_weight="balanced")``, scored by F1 (decision > 0) on the test words.
3. Main latents (``add_feature_splits_to_metrics_df``): walk k = 1, 2, ...; keep k while its F1
   beats the best so far by more than ``f1_jump_threshold`` 0.03; the last kept k's latents are
   the letter's main latents (more than one: feature splitting).
4. Letters whose probe F1 on the test words is not above ``min_GT_probe_f1`` 0.6 are left out;
   with fewer than ``min_feats_for_eval`` 20 such letters the eval stops (``main.py``).
5. On each test word of the letter that the probe detects (logit > 0), with p the unit probe
   direction, cos_j = cos(p, W_dec[j]), proj_j = z_j cos_j and act = x . p
   (``feature_absorption_calculator.py``):
   - absorption fraction: main = sum of proj over the main latents; absorbers = the (up to 3)
     other latents with cos >= 0.1 and proj > 0, largest first, summed. The fraction is 0 if
     main >= act or absorbers / act < 0.4; 1 if main <= 0; else a / (a + main) with
     a = min(absorbers, act - main), clipped to [0, 1];
   - full absorption: every main latent has |z| < 1e-8, the latent of largest proj has
     cos >= 0.025, act >= 0, and that latent's proj / act >= 0.4.
6. Per letter the mean fraction and the full-absorption rate over those probe true positives; the
   scores are their means over the letters kept (``_aggregate_results_df``).

What differs here, and why:

- Contexts, not prompts or unseen words. The zoo tokenizer is word-level: a word is one token and
  the model has no spelling, so a first-letter probe cannot generalise to unseen words. We read the
  residual at occurrences of alphabetic tokens in generated corpus documents and split *by
  context*: training and test documents come from disjoint seeds (a test document equal to a
  training one is dropped), and only words seen in both splits are kept. The probe learns
  word -> first letter on training contexts and is tested on other contexts of the same words.
- A word counts once per occurrence (at most ``max_per_word`` per split), not once per word.
- Letters need ``min_words`` distinct words to be scored; there is no stop below 20 letters (the
  zoo's vocabulary has about 20 letters with 5 or more words).
- Probes are scikit-learn's. The ground-truth probe is one binary ``LogisticRegression`` per
  letter (one-vs-rest, lbfgs, ``class_weight="balanced"``, which weighs positives against
  negatives as SAEBench's pos_weight does), trained once per (model, hook) in ``absorption_data``
  on activations centred and divided by one scale (raw zoo residuals, norm ~100, did not converge),
  with L2 C = 1 / (1e-4 N): SAEBench's weight decay as a penalty on the mean loss; it is mapped back
  to activation space. The ranking probe is liblinear's L1 logistic regression with
  C = 1 / (0.01 N), SAEBench's L1 on the mean loss, instead of 50 Adam epochs; its exact zeros tie,
  so ties are broken by the latent's difference of class means.
- Word-level zoo probes are weak for letters with many words (the first letter of a word is
  arbitrary to a model without spelling: test F1 ~0.5 for b, c, m, r, s, t on zoo:tiny-a layer 1),
  so the 0.6 gate leaves those out. The cos thresholds are SAEBench's, set for d_model >= 512: at
  d_model 128 a random direction's cos has std ~0.09, so a random SAE already scores high.
- k is chosen by F1 on the *training* contexts (SAEBench uses its test words), so the contexts
  absorption is measured on never chose the main latents; the test F1 is reported beside it.
- act <= 0 gives fraction 0 and no full absorption (SAEBench divides by zero at act = 0).
"""
from __future__ import annotations

import itertools
import math
import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse
import sklearn
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from sae_core.errors import SAECoreError
from sae_core.evaluation.config import AbsorptionConfig
from sae_core.io import json_safe
from sae_core.models.corpus import generate_documents
from sae_core.models.hooks import capture
from sae_core.models.loading import to_tokens

EPS = 1e-8  # SAEBench's "main latent did not fire" tolerance (feature_absorption_calculator.py)
SEED_BASE = 7_000  # training documents use seed SEED_BASE + 2 seed, test documents the next one
# an L1 penalty: scikit-learn 1.8 deprecated ``penalty`` for ``l1_ratio``, which older versions ignore
_L1 = {"l1_ratio": 1.0} if tuple(map(int, sklearn.__version__.split(".")[:2])) >= (1, 8) else {"penalty": "l1"}


@dataclass(frozen=True)
class AbsorptionData:
    """The model's side, built once per (model, hook) and shared by every SAE: activations at word
    occurrences and the ground-truth first-letter probe (L letters, N occurrences, D = d_model)."""
    acts_ND: torch.Tensor      # hook activations at the occurrences (float32)
    letter_N: torch.Tensor     # long: index into ``letters`` (the word's lower-cased first letter)
    word_N: list[str]
    train_N: torch.Tensor      # bool: training contexts (probe, main-latent selection) vs test
    context_N: torch.Tensor    # long: index into ``contexts``
    contexts: list[str]        # the documents the occurrences come from
    letters: list[str]
    probe_W_LD: torch.Tensor   # one-vs-rest probe weights (raw activation space)
    probe_b_L: torch.Tensor
    probe_f1_L: list[float]    # probe F1 on the test contexts (logit > 0)
    hook: str = ""


def absorption_data(model, hook: str, cfg: AbsorptionConfig = AbsorptionConfig()) -> AbsorptionData:
    """Residuals at ``hook`` for alphabetic word occurrences in generated documents (training and
    test documents from disjoint seeds) and the first-letter probe trained on the training ones."""
    train_docs = list(itertools.islice(generate_documents(SEED_BASE + 2 * cfg.seed), cfg.n_docs))
    seen = set(train_docs)
    test_docs = [d for d in itertools.islice(generate_documents(SEED_BASE + 2 * cfg.seed + 1), cfg.n_docs)
                 if d not in seen]
    contexts = train_docs + test_docs
    tokens_BT = to_tokens(model, contexts)[:, :model.cfg.n_ctx]
    words = _token_words(model.tokenizer, tokens_BT)
    rng = random.Random(cfg.seed)
    picked = {}  # split -> word -> [(doc, pos)]
    for split, docs in ((True, range(len(train_docs))), (False, range(len(train_docs), len(contexts)))):
        occ = defaultdict(list)
        for b in docs:
            for t, tok in enumerate(tokens_BT[b].tolist()):
                if (w := words.get(tok)) is not None:
                    occ[w].append((b, t))
        picked[split] = {w: rng.sample(o, min(len(o), cfg.max_per_word)) for w, o in sorted(occ.items())}
    kept = sorted(set(picked[True]) & set(picked[False]))  # the probe cannot know a word it never saw
    rows = [(b, t, w, split) for split in (True, False) for w in kept for b, t in picked[split][w]]
    if not rows:
        raise SAECoreError(f"no alphabetic word occurs in both training and test documents of {cfg.n_docs} "
                           "documents; raise n_docs")
    b_N = torch.tensor([r[0] for r in rows])
    t_N = torch.tensor([r[1] for r in rows])
    device = next(model.parameters()).device
    parts = []
    for s in range(0, len(contexts), 64):  # batches of 64 documents, one short pass each
        sel_N = (b_N >= s) & (b_N < s + 64)
        if sel_N.any():
            acts_BTD = capture(model, tokens_BT[s:s + 64].to(device), [hook])[hook]
            parts.append((sel_N, acts_BTD[b_N[sel_N] - s, t_N[sel_N]].float().cpu()))
    acts_ND = torch.empty(len(rows), parts[0][1].shape[1])
    for sel_N, a in parts:
        acts_ND[sel_N] = a
    return build_data(acts_ND, [r[2] for r in rows], torch.tensor([r[3] for r in rows]), b_N, contexts,
                      cfg, hook)


def _token_words(tokenizer, tokens_BT: torch.Tensor) -> dict[int, str]:
    """Token id -> word, for the alphabetic tokens among ``tokens_BT`` (special tokens excluded; a
    byte-level tokenizer's leading-space marker is stripped by decoding)."""
    special = set(tokenizer.all_special_ids)
    out = {}
    for i in torch.unique(tokens_BT).tolist():
        w = tokenizer.decode([i]).strip()
        if i not in special and w.isalpha() and w.isascii():
            out[i] = w
    return out


def build_data(acts_ND: torch.Tensor, word_N: list[str], train_N: torch.Tensor, context_N: torch.Tensor,
               contexts: list[str], cfg: AbsorptionConfig = AbsorptionConfig(), hook: str = "") -> AbsorptionData:
    """``AbsorptionData`` from occurrences (what ``absorption_data`` collects; tests plant their own):
    letters from the words, and the ground-truth probe trained on the training occurrences."""
    train_N = train_N.bool()
    if train_N.all() or not train_N.any():
        raise SAECoreError("absorption needs occurrences in both training and test contexts")
    letters = sorted({w[0].lower() for w in word_N})
    letter_N = torch.tensor([letters.index(w[0].lower()) for w in word_N])
    x_ND = acts_ND.double().numpy()
    # centred and divided by one scale for the solver (lbfgs on raw zoo residuals, norm ~100, did not
    # converge in 2000 iterations). One scale, not one per dimension, keeps the L2 penalty isotropic
    # (per-dimension scaling inflates near-constant dimensions); the probes are mapped back below,
    # so weights and logits live in activation space
    mu_D = x_ND[train_N].mean(0)
    sd = float((x_ND[train_N] - mu_D).std()) or 1.0
    x_tr, x_te = (x_ND[train_N] - mu_D) / sd, (x_ND[~train_N] - mu_D) / sd
    y_tr, y_te = letter_N[train_N].numpy(), letter_N[~train_N].numpy()
    W, b, f1 = [], [], []
    for i in range(len(letters)):
        # one binary probe per letter, as SAEBench's BCE multi-probe is; C turns its weight decay
        # on the mean loss into sklearn's penalty on the summed loss
        lr = LogisticRegression(C=1.0 / (cfg.probe_l2 * len(y_tr)), class_weight="balanced", max_iter=2000)
        lr.fit(x_tr, y_tr == i)
        W.append(lr.coef_[0] / sd)
        b.append(lr.intercept_[0] - float(lr.coef_[0] @ mu_D) / sd)
        f1.append(float(f1_score(y_te == i, lr.decision_function(x_te) > 0, zero_division=0.0)))
    return AbsorptionData(acts_ND.float(), letter_N, list(word_N), train_N, context_N.long(), list(contexts),
                          letters, torch.tensor(np.array(W), dtype=torch.float32),
                          torch.tensor(b, dtype=torch.float32), f1, hook)


@dataclass(frozen=True)
class AbsorptionResult:
    """Per letter (``per_letter`` rows): ``letter``; ``n_words`` distinct words in the test contexts
    (each also seen in training); ``n_train`` / ``n_test`` occurrences; ``probe_f1`` (test);
    ``scored`` and, when not, ``reason``; ``main_latents`` and the chosen k-sparse probe's F1 on
    training (``main_f1``) and test (``main_f1_test``) contexts; ``n_probe_true_positives`` (the
    test occurrences scored); ``absorption_rate`` (SAEBench's mean_absorption_fraction),
    ``full_absorption_rate`` and ``n_full_absorption``; ``absorbed_words`` (word -> mean fraction,
    the 10 most absorbed) and ``absorbing_latents`` (the latents projecting most onto the probe on
    absorbed occurrences, most frequent first, up to 5)."""
    per_letter: list[dict]      # one row per letter, scored or not (``reason`` says why not)
    mean_absorption: float      # mean absorption fraction over scored letters (NaN: none scored)
    mean_full_absorption: float  # mean full-absorption rate over scored letters (NaN: none scored)
    method: str                 # what was computed and how it differs from SAEBench
    config: dict = field(default_factory=dict)

    @property
    def n_scored(self) -> int:
        return sum(r["scored"] for r in self.per_letter)

    def to_dict(self) -> dict:
        """JSON-safe (NaN -> None): for ``json.dumps(..., allow_nan=False)``."""
        return json_safe(asdict(self) | {"n_scored": self.n_scored})


def absorption(sae, data: AbsorptionData, cfg: AbsorptionConfig = AbsorptionConfig()) -> AbsorptionResult:
    """SAEBench's absorption fraction and full-absorption rate per letter for ``sae`` (in eval
    mode: its inference codes are read) on ``data``."""
    if sae.training:
        raise SAECoreError("absorption reads the SAE's inference codes: call sae.eval() first "
                           "(load_sae returns it in eval mode)")
    if sae.cfg.d_in != data.acts_ND.shape[1]:
        raise SAECoreError(f"the SAE reads d_in = {sae.cfg.d_in} but the absorption data has width "
                           f"{data.acts_ND.shape[1]} (hook {data.hook!r}): use the SAE's own model and hook")
    with torch.inference_mode():
        z_NS = torch.cat([sae.encode(x.to(sae.device, sae.W_enc.dtype)).float().cpu()
                          for x in data.acts_ND.split(4096)])
        dec_SD = torch.nn.functional.normalize(sae.W_dec.detach().float().cpu(), dim=1)
    p_LD = torch.nn.functional.normalize(data.probe_W_LD, dim=1)
    cos_LS = p_LD @ dec_SD.T
    train, test = data.train_N, ~data.train_N
    z_tr = scipy.sparse.csr_matrix(z_NS[train].numpy())
    logit_NL = data.acts_ND @ data.probe_W_LD.T + data.probe_b_L
    test_words = defaultdict(set)  # letter index -> the distinct words of its test occurrences
    for w, i, is_train in zip(data.word_N, data.letter_N.tolist(), data.train_N.tolist()):
        if not is_train:
            test_words[i].add(w)
    rows = []
    for i, letter in enumerate(data.letters):
        is_l = data.letter_N == i
        row = dict(letter=letter, n_words=len(test_words[i]),
                   n_train=int((is_l & train).sum()), n_test=int((is_l & test).sum()),
                   probe_f1=data.probe_f1_L[i], scored=False, reason=None, main_latents=[], main_f1=None,
                   main_f1_test=None, n_probe_true_positives=0, absorption_rate=None,
                   full_absorption_rate=None, n_full_absorption=0, absorbed_words={}, absorbing_latents=[])
        tp = is_l & test & (logit_NL[:, i] > 0)
        if row["n_words"] < cfg.min_words:
            row["reason"] = f"{row['n_words']} words < min_words {cfg.min_words}"
        elif not data.probe_f1_L[i] > cfg.min_probe_f1:
            row["reason"] = f"probe F1 {data.probe_f1_L[i]:.2f} <= min_probe_f1 {cfg.min_probe_f1:g}"
        elif not tp.any():
            row["reason"] = "the probe detects no test occurrence"
        else:
            main, f1_tr, f1_te = _main_latents(z_tr, z_NS[test], is_l[train].numpy(), is_l[test].numpy(), cfg)
            frac_M, full_M, top_M = _absorption_scores(z_NS[tp], data.acts_ND[tp] @ p_LD[i], cos_LS[i], main, cfg)
            words = [data.word_N[j] for j in tp.nonzero()[:, 0].tolist()]
            row.update(scored=True, main_latents=main, main_f1=f1_tr, main_f1_test=f1_te,
                       n_probe_true_positives=int(tp.sum()), absorption_rate=float(frac_M.mean()),
                       full_absorption_rate=float(full_M.float().mean()), n_full_absorption=int(full_M.sum()),
                       absorbed_words=_absorbed_words(words, frac_M),
                       absorbing_latents=[j for j, _ in Counter(top_M[frac_M > 0].tolist()).most_common(5)])
        rows.append(row)
    scored = [r for r in rows if r["scored"]]
    means = [float(np.mean([r[key] for r in scored])) if scored else math.nan
             for key in ("absorption_rate", "full_absorption_rate")]
    return AbsorptionResult(rows, *means, method_text(cfg), asdict(cfg))


def _main_latents(z_tr, z_te: torch.Tensor, y_tr: np.ndarray, y_te: np.ndarray, cfg: AbsorptionConfig
                  ) -> tuple[list[int], float, float]:
    """The letter's main latents (SAEBench's k-sparse probing and F1-jump rule), with the chosen
    k-sparse probe's F1 on the training and the test contexts."""
    l1 = LogisticRegression(**_L1, solver="liblinear", C=1.0 / (cfg.k_sparse_l1 * len(y_tr)), max_iter=1000,
                            class_weight="balanced", random_state=cfg.seed).fit(z_tr, y_tr)
    mean_gap_S = np.asarray(z_tr[y_tr].mean(axis=0) - z_tr[~y_tr].mean(axis=0)).ravel()
    order = np.lexsort((-mean_gap_S, -l1.coef_[0]))  # by signed L1 weight (SAEBench: topk, not abs)
    best, chosen = -math.inf, None
    for k in range(1, min(cfg.max_k, z_tr.shape[1]) + 1):
        feats = order[:k]
        probe = LogisticRegression(max_iter=500, class_weight="balanced").fit(z_tr[:, feats], y_tr)
        f1 = float(f1_score(y_tr, probe.decision_function(z_tr[:, feats]) > 0, zero_division=0.0))
        if not f1 > best + cfg.f1_jump:
            break  # SAEBench stops at the first k that does not improve enough
        best, chosen = f1, (feats, probe)
    feats, probe = chosen
    f1_te = float(f1_score(y_te, probe.decision_function(z_te[:, feats].numpy()) > 0, zero_division=0.0))
    return [int(j) for j in feats], best, f1_te


def _absorption_scores(z_MS: torch.Tensor, act_M: torch.Tensor, cos_S: torch.Tensor, main: list[int],
                       cfg: AbsorptionConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Absorption fraction ``[M]``, full absorption ``[M]`` and the top-projecting latent ``[M]`` on
    M probe true positives (feature_absorption_calculator.py, batched)."""
    proj_MS = z_MS * cos_S  # each latent's share of the probe projection of the reconstruction
    main_M = proj_MS[:, main].sum(1)
    # absorbers: other latents aligned with the probe and pushing along it, the largest few
    eligible_S = cos_S >= cfg.fraction_cos
    eligible_S[main] = False
    absorb_MS = torch.where(eligible_S & (proj_MS > 0), proj_MS, torch.zeros(()))
    absorb_M = absorb_MS.topk(min(cfg.max_absorbers, absorb_MS.shape[1]), dim=1).values.sum(1)
    pos_M = act_M > 0  # act <= 0: nothing to absorb (SAEBench divides by zero at 0)
    safe_M = torch.where(pos_M, act_M, torch.ones(()))
    # the absorbers fill at most what the main latents left of the probe projection
    a_M = torch.minimum(absorb_M, act_M - main_M)
    frac_M = (a_M / (a_M + main_M).clamp_min(EPS)).clamp(0, 1)
    frac_M = torch.where(main_M <= 0, torch.ones(()), frac_M)
    none_M = (main_M >= act_M) | (absorb_M / safe_M < cfg.proportion) | ~pos_M
    frac_M = torch.where(none_M, torch.zeros(()), frac_M)
    # full absorption: main latents silent and one aligned latent carries the projection
    top_proj_M, top_M = proj_MS.max(dim=1)
    full_M = ((z_MS[:, main].abs() < EPS).all(1) & (cos_S[top_M] >= cfg.full_cos) & pos_M
              & (top_proj_M / safe_M >= cfg.proportion))
    return frac_M, full_M, top_M


def _absorbed_words(words: list[str], frac_M: torch.Tensor, top: int = 10) -> dict[str, float]:
    """Mean absorption fraction of the most absorbed words (those above 0), for the page."""
    by = defaultdict(list)
    for w, f in zip(words, frac_M.tolist()):
        by[w].append(f)
    means = sorted(((float(np.mean(v)), w) for w, v in by.items()), reverse=True)
    return {w: m for m, w in means[:top] if m > 0}


def method_text(cfg: AbsorptionConfig) -> str:
    """One paragraph for the page: what was computed and how it differs from SAEBench."""
    return (
        "Feature absorption (Chanin et al. 2024) as SAEBench scores it: a first-letter probe per letter "
        "on the residual; the SAE's main latents for the letter from k-sparse probing (L1-ranked latents, "
        f"k = 1..{cfg.max_k}, a latent added while F1 rises by more than {cfg.f1_jump:g}); on each test "
        "occurrence the probe detects, the absorption fraction (the probe projection carried by up to "
        f"{cfg.max_absorbers} other latents with cos >= {cfg.fraction_cos:g} when they carry at least "
        f"{cfg.proportion:g} of it) and full absorption (main latents silent, one latent with cos >= "
        f"{cfg.full_cos:g} carrying >= {cfg.proportion:g}). Unlike SAEBench, which reads unseen words in "
        "in-context spelling prompts, the zoo's tokenizer is word-level (no spelling), so occurrences of "
        "words in generated documents are split by context: the probe and the main latents are chosen on "
        "training documents and scored on other documents (disjoint seeds) holding the same words, at most "
        f"{cfg.max_per_word} occurrences per word and split. Letters need {cfg.min_words} words and probe "
        f"F1 > {cfg.min_probe_f1:g}; probes are scikit-learn logistic regressions (one-vs-rest), k is chosen "
        "on training F1, and there is no minimum number of letters. The cos thresholds are SAEBench's, "
        "set for wide models: at d_model 128 a random direction's cos already has std ~0.09."
    )
