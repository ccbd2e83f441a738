"""The Circuits page's panels: a new study's settings, and what one head or MLP does for the task."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from sae_app import circuits_cache as cc, circuits_charts as charts, feature_panels as fp, jobs
from sae_core.circuits.features import hooks_for
from sae_core.circuits.method import method_rows


def study_summary(r: dict, cfg: dict) -> bool:
    """The study's settings in a line, with its mode, and the Method panel (the authors' steps
    beside this study's, ``circuits.method``); whether its edges are the authors' (method paper)."""
    paper_edges = cfg["method"] == "paper"
    st.caption(f"{cfg['model']}, {r.get('mode', 'default')} mode, {cfg['template']} template, {cfg['n_prompts']} "
               f"candidate prompts per task; pruning at T = {cfg['discovery']['threshold']:g} points from the "
               f"{cfg['discovery']['reference']} model, means over the {cfg['discovery']['means_from']} prompts; edges "
               "by " + ("the authors' path patching in the circuit" if paper_edges
                        else f"{cfg['method']} ({cfg['baseline']} baseline)") + ".")
    if "rules" not in r:
        st.caption("An older revision of the study: rebuild it for the Method panel.")
        return paper_edges
    with st.expander(f"Method: the authors' steps and this study's ({r['mode']} mode)"):
        st.dataframe(pd.DataFrame(method_rows(r)).set_index("step"), width="stretch")
    return paper_edges


def left_out_caption(r: dict) -> None:
    """Per task, the members the tokenizer splits (left out, as the authors' filter does) and how the
    subjects were drawn, where either applies (byte-level tokenizers)."""
    from sae_core.circuits.tasks import excluded_line

    for t, v in r["tasks"].items():
        if left := v["stats"].get("excluded"):
            st.caption(f"**{t}**: {len(left)} members are not one token of this tokenizer and are left out, as the "
                       f"authors' filter does: {excluded_line(left, t)}.")
        if v.get("subjects"):
            st.caption(f"**{t}** subjects: {v['subjects']}.")


def new_study_form(sel, expanded: bool) -> None:
    """Choose model, tasks, template, method and threshold; run with progress (the artifact is
    found instead when the same settings ran before)."""
    from sae_core.circuits.discovery import DiscoveryConfig
    from sae_core.circuits.job import METHODS, CircuitStudyConfig
    from sae_core.circuits.tasks import TEMPLATES
    from sae_core.models.corpus import SEQUENCE_TASKS

    with st.expander(f"Run a new study on {sel.model_name or 'a model'}", expanded=expanded):
        c1, c2, c3 = st.columns(3)
        tasks = c1.multiselect("Tasks", list(SEQUENCE_TASKS), ["digits", "number_words", "months"], key="circ_new_tasks")
        template = c1.selectbox("Template", TEMPLATES, key="circ_new_template")
        method = c2.selectbox("Edge scores", METHODS, key="circ_new_method",
                              help="eap: attribution patching; eap-ig: with integrated gradients; patching: exact "
                                   "path patching of every edge on the full model (one forward pass each: slow); "
                                   "paper: the authors' path patching inside the mean-ablated circuit")
        prompts = c2.number_input("Candidate prompts per task", 8, 1024, 64, step=8, key="circ_new_prompts")
        threshold = c3.slider("Pruning threshold T (points)", 1.0, 60.0, 20.0, 1.0, key="circ_new_t")
        reference = c3.selectbox("Drop measured from", ["full", "current"], key="circ_new_ref",
                                 format_func=lambda r: {"full": "the full model (the authors')",
                                                        "current": "the current circuit"}[r])
        mode = "paper" if c1.toggle("The authors' prompts and OV scores (paper mode)", key="circ_new_paper") \
            else "default"

        def build(root: str, on_progress):
            cfg = CircuitStudyConfig(model=sel.model_name, tasks=tuple(tasks), template=template, method=method, mode=mode,
                                     n_prompts=int(prompts), discovery=DiscoveryConfig(threshold=threshold,
                                                                                       reference=reference))
            return cc.build_study(root, cfg, on_progress)
        jobs.build_button("Find the circuits", key="circ_new_run", title="Finding circuits…", build=build,
                          root=sel.workspace_root, select_key="circ_new_done", primary=True,
                          disabled=not (tasks and sel.model_name))


def component_panel(root: str, art, task: str, node: str) -> None:
    study = cc.open_study(str(art.path), art.created)
    r = study.results["tasks"][task]
    g = cc.graph(str(art.path), art.created, task)
    in_c = node in study.circuit(task).nodes
    st.markdown(f"**{node}** ({'in' if in_c else 'not in'} the {task} circuit)")
    c = st.columns(4)
    c[0].metric("Performance, ablated alone", f"{r['ablation'][node]:.1f}%")
    if node in g.node_scores:
        c[1].metric("Attribution", f"{g.node_scores[node]:+.3f} LD",
                    f"{100 * g.node_scores[node] / g.meta['ld_clean']:+.1f}% of LD", delta_color="off")
    ov = next((s for s in r["ov"] if s["head"] == node), None)
    if ov is not None:
        _head_details(art, r, task, node, ov, c)
    sae_features(root, art, task, node)


def _head_details(art, r: dict, task: str, node: str, ov: dict, c) -> None:
    rank = [s["head"] for s in r["ov"]].index(node) + 1
    c[2].metric("OV next / copy", f"{ov['next_score']:.2f} / {ov['copy_score']:.2f}",
                f"successor rank {rank} of {len(r['ov'])}", delta_color="off")
    att = next(s for s in r["attention"] if s["head"] == node)
    c[3].metric("Last token -> last member", f"{att['last_to_last_member']:.2f}",
                f"member -> previous {att['member_to_previous']:.2f}", delta_color="off")
    prompt = st.selectbox("Prompt", list(range(len(r["examples"]))), key="circ_prompt",
                          format_func=lambda i: r["examples"][i])
    pattern, tokens = cc.attention(str(art.path), art.created, task, node, prompt)
    st.plotly_chart(charts.attention_heatmap(pattern, tokens, node), width="stretch", key="circ_attn")


def features_heading(hook: str, node: str) -> tuple[str, str]:
    """What the table of an SAE at ``hook`` is, for component ``node``: its heading, and which
    components share it. ``feature_attributions`` attributes the task to the features at the hook
    itself, not through one component, so only an MLP's own output SAE is the component's alone."""
    layer = hook.split(".")[1]
    if hook.endswith("hook_resid_post"):
        return (f"Features of the residual-stream SAE after layer {layer} (`{hook}`)",
                f"The residual stream sums every component up to layer {layer}: this table is the task's "
                f"attribution to its features, the same for every head and MLP of layer {layer}, not what {node} "
                "alone writes.")
    if hook.endswith("attn.hook_z"):
        return (f"Features of the attention SAE of layer {layer} (`{hook}`, all its heads' outputs together)",
                f"The same table for every head of layer {layer}: the SAE reads all of them at once, so it does "
                f"not separate {node} from its neighbours.")
    return (f"Features of {node}'s output SAE (`{hook}`)", f"This SAE reads {node}'s output alone.")


def sae_features(root: str, art, task: str, node: str) -> None:
    """The SAE features at the hooks ``node`` writes to (its own output first, then its layer's
    residual stream), by attribution to the task, each a link into the feature browser."""
    model = cc.open_study(str(art.path), art.created).config["model"]
    saes = cc.saes_for(root, model, node)
    if not saes:
        st.caption(f"No SAE of {model} at {' or '.join(hooks_for(node))} in this workspace: train one (page "
                   "Sampled-SAE, or `sae-core train`) to see which of its features carry the task here.")
        return
    for sae in saes:
        table = cc.features(str(art.path), art.created, task, str(sae.path), sae.created, sae.hook)
        heading, scope = features_heading(sae.hook, node)
        st.markdown(f"**{heading}** (`{sae.name}`): attribution = sum of activation x gradient of the task's logit "
                    "difference")
        st.caption(scope)
        st.dataframe(table, hide_index=True, width="stretch", height=220,
                     column_config={"attribution (LD)": st.column_config.NumberColumn(format="%+.4f")})
        cols = st.columns(min(3, len(table)) or 1)
        for col, f in zip(cols, table["feature"].tolist()[:3]):
            if col.button(f"Open feature {f} in the feature browser", key=f"circ_open_{sae.name}_{f}",
                          on_click=fp.open_later, args=(model, sae.hook, sae.name, int(f))):
                st.switch_page("views/features.py")
