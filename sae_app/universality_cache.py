"""The Universality page's cached reads and its build job."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from sae_app import listing, results, session
from sae_core.universality.grid import (KIND as GRID_KIND, Grid, GridConfig, grid_to_workspace, harvest_grid,
                                        resid_hooks)
from sae_core.universality.job import (KIND, Universality, UniversalityConfig, paired_harvest, resolved_config,
                                       twin_config, universality_to_workspace)

RESULTS = results.Results(KIND, Universality)
GRIDS = results.Results(GRID_KIND, Grid)
list_results, open_result = RESULTS.list, RESULTS.open
list_grids, open_grid = GRIDS.list, GRIDS.open


@st.cache_data(max_entries=8, show_spinner=False)
def pairs_table(path: str, created: float) -> pd.DataFrame:
    """One row per matched pair, strongest first."""
    pairs = open_result(path, created).results["pairs"]
    df = pd.DataFrame([{"A feature": p["a"], "B feature": p["b"], "correlation": p["corr"],
                        "top tokens (A)": token_counts(p["top_a"]), "top tokens (B)": token_counts(p["top_b"]),
                        "fires (A)": p["fires_a"], "fires (B)": p["fires_b"]} for p in pairs])
    return df.sort_values("correlation", ascending=False, ignore_index=True) if len(df) else df


def pair_options(path: str, created: float) -> list[int]:
    """Pair indices, strongest correlation first (the table's order)."""
    pairs = open_result(path, created).results["pairs"]
    return sorted(range(len(pairs)), key=lambda i: -pairs[i]["corr"])


def pair_label(pair: dict) -> str:
    return f"A {pair['a']} ↔ B {pair['b']} (r = {pair['corr']:.3f}; {token_counts(pair['top_a'])})"


@st.cache_data(max_entries=64, show_spinner="Reading the contexts…")
def pair_contexts(root: str, path: str, created: float, i: int):
    """Both features of pair ``i`` in context (``universality.contexts.pair_contexts``)."""
    from sae_core.universality.contexts import pair_contexts as contexts

    u = open_result(path, created)
    tokenizer = session.load_model(u.config["model_a"]).tokenizer
    return contexts(listing.open_workspace(root), u, i, tokenizer)


def tokens_spaced(model_name: str) -> bool:
    """Whether the model's tokens are shown with spaces between them (``models.tokens``)."""
    from sae_core.models.tokens import spaced_between

    return spaced_between(session.load_model(model_name).tokenizer)


def result_label(art) -> str:
    """A result as the Result box lists it: models, hooks, mode, name."""
    a = art.meta["inputs"][0]
    mode = {"paper": ", paper mode", "custom": ", custom steps"}.get(art.meta.get("mode"), "")
    return f"{a['model']} {a['hook']} vs {art.model} {art.hook}{mode} ({art.name})"


def subspace_notes(r: dict) -> str:
    """Which groups could not be scored and why, and which have no word in the vocabulary."""
    sub = r.get("subspaces") or {}
    concepts = r.get("subspace_procedure") == "concepts"
    how = ("The authors' procedure: each group's concept features found in each model apart (A / B features), "
           "paired within the group. " if concepts else "The matched pairs with a keyword among the words of their "
                                                        "top activations. ")
    few = [f"{n} ({g['features_a']} / {g['features_b']} features, {g['n_pairs']} pairs)" if concepts
           else f"{n} ({g['n_pairs']} pairs)" for n, g in sub.items() if not g["scores"] and g.get("in_vocabulary", 1)]
    empty = [n for n, g in sub.items() if "in_vocabulary" in g and not g["in_vocabulary"]]
    return how + (f"Too few to score: {', '.join(few)}. " if few else "") + (
        f"No word of these groups is in this vocabulary (spelled by the tokenizer as one word): {', '.join(empty)}."
        if empty else "")


def token_counts(tokens: list[str]) -> str:
    """A feature's top-activation tokens, distinct, most frequent first: ``the ×3, a ×2``."""
    from collections import Counter

    return ", ".join(f"{t.strip() or repr(t)} ×{n}" if n > 1 else (t.strip() or repr(t))
                     for t, n in Counter(tokens).most_common())


def build_demo(root: str, on_progress=None):
    """The demo's result (zoo:tiny-a against zoo:tiny-b) into the workspace. Only the paired
    harvest runs the models, so only it holds their locks; SAE training and the comparison do not."""
    cfg = UniversalityConfig()

    def job(ws):
        with session.using(cfg.model_a, cfg.model_b):
            paired_harvest(ws, cfg, load=session.load_model,
                           on_progress=on_progress and (lambda d, t: on_progress(d, t, "harvesting paired tokens")))
        return universality_to_workspace(ws, cfg, load=session.load_model, on_progress=on_progress)
    return results.build(root, job)


def build_grid(root: str, on_progress=None):
    """The default layer grid (zoo:tiny-a x zoo:tiny-b). Both models' harvests (each model once, at
    every hook) run first, under the models' locks; the SAEs and comparisons then run without them."""
    cfg = GridConfig()
    base = cfg.base

    def job(ws):
        with session.using(base.model_a, base.model_b) as (a, b):
            full = replace(cfg, hooks_a=resid_hooks(a), hooks_b=resid_hooks(b))
            harvest_grid(ws, full, load=session.load_model, on_progress=on_progress and (
                lambda d, t: on_progress(d, t, "harvesting both models at every layer")))
        return grid_to_workspace(ws, cfg, load=session.load_model, on_progress=on_progress)
    return results.build(root, job)


def twin(root: str, config: dict, stored: dict, mode: str) -> str | None:
    """The name of this result's comparison in ``mode`` ("paper" / "default"; ``job.twin_config``)
    when the workspace has it (whether its SAEs were named or trained by its job)."""
    want = twin_config(config, stored, mode)
    for a in list_results(root):
        u = open_result(str(a.path), a.created)
        if "mode" in u.results and resolved_config(u.config, u.results) == want:
            return a.name
    return None


def build_twin(root: str, on_progress=None, *, config: dict, stored: dict, mode: str):
    """This result's comparison in ``mode`` on the same SAEs and harvest: the models are not run
    (their tokenizer is read), so no model lock is taken."""
    cfg = twin_config(config, stored, mode)
    return results.build(root, lambda ws: universality_to_workspace(ws, cfg, load=session.load_model,
                                                                    on_progress=on_progress))


def build_groups(root: str, on_progress=None, *, config: dict, stored: dict, groups: dict):
    """This result again (same SAEs and steps) with the user's keyword groups."""
    cfg = replace(resolved_config(config, stored), groups=groups)
    return results.build(root, lambda ws: universality_to_workspace(ws, cfg, load=session.load_model,
                                                                    on_progress=on_progress))



@st.cache_data(max_entries=32, show_spinner="Steering both models through the pair, and random pairs…")
def pair_effect(root: str, path: str, created: float, i: int, fraction: float, runs: int = 30) -> dict:
    """Pair ``i`` steered in both models against random pairs (``universality.pair_steering``), as JSON."""
    from sae_core.universality.pair_steering import steer_result_pair

    u = open_result(path, created)
    names = (u.config["model_a"], u.config["model_b"])
    with session.using(*names) as models:
        loaded = dict(zip(names, models))
        return steer_result_pair(listing.open_workspace(root), u, i, fraction=fraction, runs=runs,
                                 load=loaded.__getitem__).to_json()
