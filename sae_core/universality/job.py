"""One universality result end to end: paired harvest, SAEs, codes, matching, measures, nulls.

``universality_to_workspace(ws, cfg)``:
1. harvests both models at their hooks over the same token rows (``paired_to_workspace``: the
   tokenizers must be the same);
2. uses the named SAE artifacts, or trains a BatchTopK SAE per side on that side's harvest;
3. one ``code_pass`` over ``cfg.codes`` (correlations, top tokens, firing counts, and the
   other-documents null);
4. ``match`` with ``cfg.match``, then ``analyse`` the matched decoder rows, all of them and
   within each semantic subspace (``subspaces``: groups of the matched pairs; or ``concepts``,
   the authors' procedure);
5. writes a ``universality`` artifact: ``universality.json`` (config and results, with each pair's
   correlation, top tokens, the words those tokens belong to in their documents (``words``: what
   keyword groups match, so that a byte-level BPE's word pieces count), and the paired harvest's
   rows of its top activations, from which ``contexts.pair_contexts`` shows them in context) and
   ``pairs.csv``. It lists both models and hooks as its inputs.

It returns at once when the artifact exists (the name is a hash of the configuration).

``paper_config(cfg)`` is the authors' computation (wlg1/univ_feat_geom: ``getScores_pythia.py``
``run_expm`` and ``getSemanticScores_pythia.py``): pre-activations correlated, their non-concept
list and filter order with one pair per A feature (first seen), SVCCA with one direction, their
semantic-subspace procedure on their eight categories. ``cfg.mode`` says which a result is
("paper", "default", or "custom" for any other mix); ``method.method_rows`` lists every step.
"""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from sae_core.io import JsonResult, atomic_write_bytes, atomic_write_json
from sae_core.universality.analysis import AnalysisConfig, analyse
from sae_core.universality.codes import CODES, CodePass, code_pass
from sae_core.universality.concepts import concept_subspaces, concept_words
from sae_core.universality.keyword_groups import AUTHORS_GROUPS, check_groups, vocabulary_hits, zoo_groups
from sae_core.universality.matching import AUTHORS_NONCONCEPT, MatchConfig, Matches, match, nonconcept_ids
from sae_core.universality.measures import UniversalityError
from sae_core.universality.subspaces import subspace_scores
from sae_core.universality.words import TokenWords
from sae_core.workspace import Artifact, Workspace, artifact_name

KIND = "universality"
# 2: semantic subspaces; 3: each pair's top rows (for its contexts); 4: codes, modes (#29);
# 5: each top activation's word (keyword groups on byte-level BPE)
REVISION = 5
SUBSPACES = ("matched", "concepts")
Progress = Callable[[int, int, str], None]
HIST_BINS = np.linspace(-0.2, 1.0, 49)
NULL_EVERY = 4  # the correlation histogram's batches: one in four


@dataclass(frozen=True)
class UniversalityConfig:
    model_a: str = field(default="zoo:tiny-a", metadata={"help": "Model A."})
    hook_a: str = field(default="blocks.1.hook_resid_post", metadata={"help": "Model A's hook."})
    model_b: str = field(default="zoo:tiny-b", metadata={"help": "Model B (same tokenizer as A)."})
    hook_b: str = field(default="blocks.3.hook_resid_post", metadata={"help": "Model B's hook."})
    # an SAE artifact in the workspace; None: trained by the job
    sae_a: str | None = field(default=None, metadata={"help": "A workspace SAE for A (default: train one)."})
    sae_b: str | None = field(default=None, metadata={"help": "A workspace SAE for B (default: train one)."})
    # SAEs the job trains: BatchTopK of this width and k
    d_sae: int = field(default=1024, metadata={"help": "Width of SAEs the job trains."})
    k: int = field(default=16, metadata={"help": "k of SAEs the job trains (BatchTopK)."})
    train_tokens: int = field(default=1_000_000, metadata={"help": "Training tokens per trained SAE."})
    n_tokens: int = field(default=200_000, metadata={"help": "Paired tokens the codes are compared on."})
    context_size: int = 64
    match: MatchConfig = field(default_factory=MatchConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    codes: str = field(default="sparse", metadata={
        "help": "What is correlated: sparse (the SAE's codes) | pre_acts (its dense ReLU pre-activations, "
                "as the authors)."})
    subspaces: str = field(default="matched", metadata={
        "help": "Semantic subspaces: matched (groups of the matched pairs) | concepts (the authors': concept "
                "features found in each model, paired within the group)."})
    # semantic subspaces: name -> keywords (None: the zoo's groups, or the paper's under "concepts")
    groups: dict | None = None
    seed: int = 0

    def __post_init__(self):
        if self.n_tokens < 1000:
            raise UniversalityError(f"n_tokens={self.n_tokens}: correlations over fewer than 1000 tokens are "
                                    "noise; give at least 1000 (200k is usual)")
        if self.d_sae < 16 or not 0 < self.k < self.d_sae:
            raise UniversalityError(f"d_sae={self.d_sae}, k={self.k}: give d_sae >= 16 and 0 < k < d_sae")
        if self.codes not in CODES:
            raise UniversalityError(f"codes={self.codes!r}: choose one of {', '.join(CODES)}")
        if self.subspaces not in SUBSPACES:
            raise UniversalityError(f"subspaces={self.subspaces!r}: choose one of {', '.join(SUBSPACES)}")
        if self.groups is not None:
            check_groups(self.groups)

    @property
    def mode(self) -> str:
        """"paper" (every step as the authors), "default" (every step as this project's
        defaults), or "custom"."""
        if self == paper_config(self):
            return "paper"
        return "default" if self == _default_steps(self) else "custom"

    @property
    def keyword_groups(self) -> dict:
        return self.groups or (AUTHORS_GROUPS if self.subspaces == "concepts" else zoo_groups())

    def to_json(self) -> dict:
        d = asdict(self)
        d["match"], d["analysis"] = self.match.to_json(), self.analysis.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "UniversalityConfig":
        """The config a result stored (``to_json``; older results lack later fields: their defaults)."""
        a = dict(d["analysis"])
        a["measures"] = tuple(a.get("measures", AnalysisConfig().measures))
        return cls(**{**d, "match": MatchConfig(**d["match"]), "analysis": AnalysisConfig(**a)})


def paper_config(cfg: UniversalityConfig = UniversalityConfig()) -> UniversalityConfig:
    """``cfg`` with every step as the authors computed it (module doc); models, hooks, SAEs,
    token counts and groups given by the user stay."""
    return replace(cfg, codes="pre_acts", subspaces="concepts",
                   match=replace(cfg.match, rule="many_to_one", min_corr=0.1, drop_nonconcept=True,
                                 shared_token=True, dedupe="first", order="paper", nonconcept_list="authors"),
                   analysis=replace(cfg.analysis, paper_compat=True))


def _default_steps(cfg: UniversalityConfig) -> UniversalityConfig:
    d, m, a = UniversalityConfig(), MatchConfig(), AnalysisConfig()
    return replace(cfg, codes=d.codes, subspaces=d.subspaces, match=m,
                   analysis=replace(cfg.analysis, paper_compat=a.paper_compat))


class Universality(JsonResult):
    FILE = "universality.json"


def _sae_for(ws: Workspace, name: str | None, acts: Artifact, model_name: str, hook: str,
             cfg: UniversalityConfig, step: Callable[[str, float], None]):
    from sae_core.activations import ActivationStore
    from sae_core.sae.config import SAEConfig
    from sae_core.sae.io import load_sae
    from sae_core.training.job import train_to_workspace
    from sae_core.training.loop import TrainerConfig

    if name is not None:
        art = ws.get("sae", name)
        if art is None:
            raise UniversalityError(f"no SAE named {name!r} in the workspace {ws.root}; `sae-core workspace "
                                    "list --kind sae` shows them, or leave it out to train one")
        return load_sae(art.path), art.name
    what = f"training a BatchTopK SAE on {model_name} {hook}"
    step(what, 0.0)
    d_in = ActivationStore.open(acts.path).d
    sae_cfg = SAEConfig(arch="batchtopk", d_in=d_in, d_sae=cfg.d_sae, k=cfg.k, model_name=model_name,
                        hook_name=hook)
    tcfg = TrainerConfig(total_tokens=cfg.train_tokens, batch_size=min(4096, cfg.train_tokens), seed=cfg.seed)
    art = train_to_workspace(ws, acts, sae_cfg, tcfg, on_step=lambda log, total: step(what, log.step / total))
    return load_sae(art.path), art.name


def _hist(values: torch.Tensor) -> list[int]:
    return np.histogram(values.numpy(), bins=HIST_BINS)[0].tolist()


def _pairs_rows(m: Matches, cp: CodePass, tok, token_ids: torch.Tensor, doc: torch.Tensor) -> list[dict]:
    """Each matched pair as the result stores it: correlation, firing counts, and per side its top
    activations' tokens, their words (``words.TokenWords``, read in the paired harvest's documents:
    ``token_ids``, ``doc`` per row) and their rows."""
    reader = TokenWords(tok)

    def tops(ids: torch.Tensor, f: int) -> list[str]:
        return [tok.decode([int(t)]) for t in ids[:, f].tolist() if t >= 0]

    def rows(r: torch.Tensor, f: int) -> list[int]:
        return [int(x) for x in r[:, f].tolist() if x >= 0]

    def words(r: torch.Tensor, f: int) -> list[str]:
        return [reader.word(token_ids, doc, x) for x in rows(r, f)]
    return [{"a": int(a), "b": int(b), "corr": float(c), "fires_a": int(cp.fires_a[a]), "fires_b": int(cp.fires_b[b]),
             "top_a": tops(cp.top_ids_a, a), "top_b": tops(cp.top_ids_b, b),
             "words_a": words(cp.top_rows_a, a), "words_b": words(cp.top_rows_b, b),
             "rows_a": rows(cp.top_rows_a, a), "rows_b": rows(cp.top_rows_b, b)} for a, b, c in zip(m.a, m.b, m.corr)]


def paired_harvest(ws: Workspace, cfg: UniversalityConfig, *, load: Callable[[str], object] | None = None,
                   on_progress: Callable[[int, int], None] | None = None) -> Artifact:
    """The paired harvest ``cfg`` compares codes on (or the existing one): the job's only pass that
    runs the models, so an app can hold the models' locks for it alone."""
    from sae_core.activations.paired import paired_to_workspace

    return paired_to_workspace(ws, (cfg.model_a, cfg.hook_a), (cfg.model_b, cfg.hook_b), n_tokens=cfg.n_tokens,
                               seed=cfg.seed, context_size=cfg.context_size, load=load, on_progress=on_progress)


def result_name(cfg: UniversalityConfig) -> str:
    """The artifact name of ``cfg``'s result (a hash of the configuration)."""
    return artifact_name(cfg.model_b, cfg.hook_b, {"universality": cfg.to_json(), "revision": REVISION})


def resolved_config(config: dict, results: dict) -> UniversalityConfig:
    """A stored result's config with the SAEs it used named (a job that trained them has None)."""
    return replace(UniversalityConfig.from_json(config), sae_a=results["saes"]["a"], sae_b=results["saes"]["b"])


def twin_config(config: dict, results: dict, mode: str) -> UniversalityConfig:
    """A stored result's comparison in ``mode`` ("paper" or "default"): the same models, hooks,
    SAEs (those the result used), tokens and groups, every step as that mode computes it."""
    cfg = resolved_config(config, results)
    return paper_config(cfg) if mode == "paper" else _default_steps(cfg)


def universality_to_workspace(ws: Workspace, cfg: UniversalityConfig = UniversalityConfig(), *,
                              load: Callable[[str], object] | None = None,
                              on_progress: Progress | None = None) -> Artifact:
    """Build (or find) the universality result of ``cfg`` (module doc)."""
    from sae_core.activations.paired import open_paired

    name = result_name(cfg)
    if (existing := ws.get(KIND, name)) is not None:
        return existing
    if load is None:
        from sae_core.models.loading import load_model as load
    stages = ["harvest", "SAE A", "SAE B", "codes", "measures", "writing"]
    report = on_progress or (lambda done, total, text: None)

    def stage(i: int, text: str, within: float = 0.0) -> None:
        report(i + min(within, 1.0), len(stages), text)

    harvesting = f"harvesting {cfg.n_tokens:,} paired tokens"
    stage(0, harvesting)
    pair_art = paired_harvest(ws, cfg, load=load, on_progress=lambda d, t: stage(0, harvesting, d / max(t, 1)))
    pair = open_paired(ws, pair_art)
    acts_a, acts_b = (ws.get("activations", n) for n in pair_art.meta["activations"])
    sae_a, sae_a_name = _sae_for(ws, cfg.sae_a, acts_a, cfg.model_a, cfg.hook_a, cfg, lambda t, f: stage(1, t, f))
    sae_b, sae_b_name = _sae_for(ws, cfg.sae_b, acts_b, cfg.model_b, cfg.hook_b, cfg, lambda t, f: stage(2, t, f))
    tok = load(cfg.model_a).tokenizer  # the models run no more: only their tokenizer is read
    stage(3, "SAE codes and correlations")
    cp = code_pass(pair, sae_a, sae_b, drop_ids=set(getattr(tok, "all_special_ids", []) or []),
                   null_every=NULL_EVERY, codes=cfg.codes,
                   on_progress=lambda d, t: stage(3, f"SAE codes and correlations: {d:,} of {t:,} tokens", d / t))
    m = match(cp.correlation, cfg.match, **_token_sets(cfg.match, cp, tok))
    stage(4, f"measures on {len(m)} pairs")
    dec_a = sae_a.W_dec.detach().double().cpu().numpy()
    dec_b = sae_b.W_dec.detach().double().cpu().numpy()
    scores = analyse(dec_a, dec_b, m, cfg.analysis, live_a=cp.correlation.alive_a.numpy(),
                     live_b=cp.correlation.alive_b.numpy(),
                     on_progress=lambda d, t, text: stage(4, text, d / t))
    ids, (doc, _) = pair.a.token_ids(), pair.a.row_keys()  # row r is the same token on both sides
    pairs = _pairs_rows(m, cp, tok, ids, doc)
    stage(4, "semantic subspaces", 0.95)
    groups = cfg.keyword_groups
    if cfg.subspaces == "matched":
        subspaces = subspace_scores(dec_a[m.a], dec_b[m.b], pairs, groups, cfg.analysis)
    else:
        words = [concept_words(rows, ids, doc, tok) for rows in (cp.top_rows_a, cp.top_rows_b)]
        subspaces = concept_subspaces(cp.correlation.corr, dec_a, dec_b, *words, groups, cfg.analysis)
    for group, in_vocab in vocabulary_hits(groups, tok).items():
        subspaces[group]["in_vocabulary"] = in_vocab
    hist = None
    if cp.null_correlation is not None:
        sub, null = cp.sub_correlation, cp.null_correlation
        hist = {"bins": HIST_BINS.tolist(), "n_tokens": sub.n_tokens,
                "paired": _hist(sub.corr.max(0).values[sub.alive_b]),
                "null": _hist(null.corr.max(0).values[null.alive_b])}
    results = {
        **scores, "mode": cfg.mode, "codes": cfg.codes, "subspace_procedure": cfg.subspaces,
        "steps": [list(s) for s in m.steps], "step_mean_corr": list(m.step_means),
        "unique_a": int(np.unique(m.a).size), "match_label": cfg.match.label,
        "n_tokens": cp.n_tokens, "saes": {"a": sae_a_name, "b": sae_b_name}, "paired": pair_art.name,
        "d_sae": {"a": sae_a.cfg.d_sae, "b": sae_b.cfg.d_sae},
        "alive": {"a": int(cp.correlation.alive_a.sum()), "b": int(cp.correlation.alive_b.sum())},
        "best_corr_hist": hist,
        "pairs": pairs, "subspaces": subspaces,
    }
    stage(5, "writing")
    svcca = results["scores"].get("svcca")
    meta = {"inputs": [{"model": cfg.model_a, "hook": cfg.hook_a, "side": "a"},
                       {"model": cfg.model_b, "hook": cfg.hook_b, "side": "b"}],
            "n_pairs": len(m), "svcca": svcca and svcca["value"], "svcca_p": svcca and svcca["shuffled"]["p"],
            "mode": cfg.mode}
    with ws.create(KIND, name, model=cfg.model_b, hook=cfg.hook_b, meta=meta, overwrite=True) as d:
        atomic_write_json(d / Universality.FILE, {"config": cfg.to_json(), "results": results})
        atomic_write_bytes(d / "pairs.csv", pairs_csv(results["pairs"]).encode())
    return ws.get(KIND, name)


def _token_sets(cfg: MatchConfig, cp: CodePass, tok) -> dict:
    """The token filters' inputs: token ids and this project's non-concept ids, or, with the
    authors' list, the decoded top tokens and their 12 strings (they compared strings)."""
    if cfg.nonconcept_list == "authors":
        def text(ids: list[set[int]]) -> list[set[str]]:
            return [{tok.decode([t]) for t in s} for s in ids]
        return {"top_a": text(cp.top_a), "top_b": text(cp.top_b), "nonconcept": AUTHORS_NONCONCEPT}
    return {"top_a": cp.top_a, "top_b": cp.top_b, "nonconcept": nonconcept_ids(tok)}


def pairs_csv(pairs: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["a", "b", "corr", "fires_a", "fires_b", "top_a", "top_b"])
    for p in pairs:
        w.writerow([p["a"], p["b"], f"{p['corr']:.6f}", p["fires_a"], p["fires_b"], " ".join(p["top_a"]),
                    " ".join(p["top_b"])])
    return buf.getvalue()
