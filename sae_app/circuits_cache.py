"""The Circuits page's cached reads and its build job.

Only attention patterns run the model (inside ``session.using``); the graph, its threshold and the
comparison are read from the study, so moving the slider redraws without touching a model."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from sae_app import listing, results, session
from sae_core.circuits.job import KIND, CircuitStudy, circuit_edges, circuits_to_workspace

STUDIES = results.Results(KIND, CircuitStudy)
list_studies, open_study = STUDIES.list, STUDIES.open


@st.cache_resource(max_entries=16, show_spinner=False)
def graph(path: str, created: float, task: str):
    return open_study(path, created).graph(task)


@st.cache_data(max_entries=256, show_spinner=False)
def edges_at(path: str, created: float, task: str, percent: float, circuit_only: bool) -> list[str]:
    """The task's edges at ``percent`` of the model's logit difference, between the circuit's
    components (or any components), pruned to paths from input to logits; for the authors' edges
    (method ``paper``), the edges their rule kept."""
    study, g = open_study(path, created), graph(path, created, task)
    if g.meta.get("method") == "paper":  # the authors' rule chose them (edge_pruning.py): no threshold applies
        return sorted(g.in_graph)
    nodes = study.circuit(task).nodes if circuit_only else study.components(task)
    return sorted(circuit_edges(g, nodes, percent / 100))


def node_text(path: str, created: float, task: str) -> dict[str, str]:
    """Hover text per component: ablation performance, attribution and OV scores."""
    r = open_study(path, created).results["tasks"][task]
    g = graph(path, created, task)
    ov = {s["head"]: s for s in r["ov"]}
    out = {}
    for name, perf in r["ablation"].items():
        text = f"{name}<br>ablated alone: {perf:.1f}% performance"
        if name in g.node_scores:
            text += f"<br>attribution: {g.node_scores[name]:+.3f} LD"
        if name in ov:
            text += f"<br>OV next {ov[name]['next_score']:.2f}, copy {ov[name]['copy_score']:.2f}"
        out[name] = text
    return out


def node_table(path: str, created: float, task: str) -> pd.DataFrame:
    """One row per head and MLP: in the circuit, ablation, attribution, OV and attention scores."""
    study = open_study(path, created)
    r, g = study.results["tasks"][task], graph(path, created, task)
    ov = {s["head"]: s for s in r["ov"]}
    att = {s["head"]: s for s in r["attention"]}
    nodes = set(study.circuit(task).nodes)
    rows = [{"component": n, "in circuit": n in nodes, "ablated alone (%)": r["ablation"][n],
             "attribution (LD)": g.node_scores.get(n), "OV next": ov.get(n, {}).get("next_score"),
             "OV copy": ov.get(n, {}).get("copy_score"),
             "last -> last member": att.get(n, {}).get("last_to_last_member"),
             "member -> previous": att.get(n, {}).get("member_to_previous")} for n in study.components(task)]
    return pd.DataFrame(rows)


def _task(model, cfg: dict, task: str):
    """The study's prompts of ``task`` again (``make_task`` is deterministic in its config)."""
    return _task_set(model, cfg["model"], cfg["template"], cfg["n_prompts"], cfg["seed"], task,
                     cfg.get("mode") == "paper")


@st.cache_resource(max_entries=16, show_spinner=False)  # half a second each: a task change waited for it
def _task_set(_model, model_name: str, template: str, n_prompts: int, seed: int, task: str, paper: bool = False):
    """Shared read-only by every session (the attention pattern and the feature table read it);
    ``paper``: the authors' prompts, as a paper-mode study made them."""
    from sae_core.circuits.tasks import TaskConfig, make_task

    return make_task(_model, TaskConfig(task=task, template=template, n_prompts=n_prompts, seed=seed, paper=paper))


@st.cache_data(max_entries=64, show_spinner="Running the model for the attention pattern…")
def attention(path: str, created: float, task: str, head: str, prompt: int):
    """(pattern [query, key], token strings) of ``head`` on the task's prompt number ``prompt``."""
    from sae_core.circuits.ablation import parse_node
    from sae_core.circuits.heads import attention_patterns

    cfg = open_study(path, created).config
    layer, h = parse_node(head)
    with session.using(cfg["model"]) as (model,):
        ts = _task(model, cfg, task)
        pat = attention_patterns(model, ts, [(layer, h)], prompt=min(prompt, len(ts) - 1))[head]
        tokens = [model.tokenizer.decode([t]) for t in ts.clean_BT[min(prompt, len(ts) - 1)].tolist()]
    return pat.numpy(), tokens


@st.cache_data(max_entries=64, show_spinner="Reading the residual stream through the unembedding…")
def lens(path: str, created: float, task: str, mode: str) -> list[dict]:
    """The logit lens rows of the study's prompts of ``task`` (``circuits.logit_lens``)."""
    from sae_core.circuits.logit_lens import logit_lens

    cfg = open_study(path, created).config
    with session.using(cfg["model"]) as (model,):
        return [r.to_json() for r in logit_lens(model, _task(model, cfg, task), mode)]


def study_label(art) -> str:
    """A circuits study as the Circuits page's selector names it (links from other pages select it by this)."""
    return (f"{art.model}: {', '.join(art.meta['tasks'])} ({art.meta.get('mode', 'default')} mode, "
            f"{art.meta['method']} edges, {art.name})")


def saes_for(root: str, model_name: str, node: str):
    """The workspace's SAEs of ``model_name`` at a hook ``node`` writes to (``features.hooks_for``)."""
    from sae_core.circuits.features import hooks_for

    hooks = hooks_for(node)
    return sorted((a for a in listing.list_artifacts(root, "sae") if a.model == model_name and a.hook in hooks),
                  key=lambda a: hooks.index(a.hook))  # its own output first


@st.cache_data(max_entries=64, show_spinner="Attributing the task to the SAE's features…")
def features(path: str, created: float, task: str, sae_path: str, sae_created: float, hook: str) -> pd.DataFrame:
    """The SAE's features with the largest attribution to the task's logit difference."""
    from sae_core.circuits.features import feature_attributions
    from sae_core.sae.io import load_sae

    cfg = open_study(path, created).config
    sae = load_sae(Path(sae_path))
    with session.using(cfg["model"]) as (model,):
        rows = feature_attributions(model, _task(model, cfg, task), sae, hook)
    return pd.DataFrame([{"feature": f.feature, "attribution (LD)": f.score, "fires on": f.fires,
                          "mean activation": f.mean_act} for f in rows])


def build_demo(root: str, on_progress=None):
    from sae_core.demo import demo_circuits_config

    return build_study(root, demo_circuits_config(), on_progress)


def build_study(root: str, cfg, on_progress=None):
    """The circuits study of ``cfg`` into the workspace (it runs the model throughout: its lock is held)."""
    return results.build(root, lambda ws, *_models: circuits_to_workspace(
        ws, cfg, load=session.load_model, on_progress=on_progress), models=(cfg.model,))
