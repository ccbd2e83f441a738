"""The Circuits page's component panel: what one head or MLP does for the task, and its attention."""
from __future__ import annotations

import streamlit as st

from sae_app import circuits_cache as cc, circuits_charts as charts


def component_panel(art, task: str, node: str) -> None:
    study = cc.open_study(str(art.path), art.created)
    r, cfg = study.results["tasks"][task], study.config
    g = cc.graph(str(art.path), art.created, task)
    in_c = node in study.circuit(task).nodes
    st.markdown(f"**{node}** ({'in' if in_c else 'not in'} the {task} circuit)")
    c = st.columns(4)
    c[0].metric("Performance, ablated alone", f"{r['ablation'][node]:.1f}%")
    if node in g.node_scores:
        c[1].metric("Attribution", f"{g.node_scores[node]:+.3f} LD",
                    f"{100 * g.node_scores[node] / g.meta['ld_clean']:+.1f}% of LD", delta_color="off")
    ov = next((s for s in r["ov"] if s["head"] == node), None)
    if ov is None:
        st.caption("An MLP: no attention pattern or OV scores.")
        return
    rank = [s["head"] for s in r["ov"]].index(node) + 1
    c[2].metric("OV next / copy", f"{ov['next_score']:.2f} / {ov['copy_score']:.2f}",
                f"successor rank {rank} of {len(r['ov'])}", delta_color="off")
    att = next(s for s in r["attention"] if s["head"] == node)
    c[3].metric("Last token -> last member", f"{att['last_to_last_member']:.2f}",
                f"member -> previous {att['member_to_previous']:.2f}", delta_color="off")
    prompt = st.selectbox("Prompt", list(range(len(r["examples"]))), key="circ_prompt",
                          format_func=lambda i: r["examples"][i])
    pattern, tokens = cc.attention(cfg["model"], task, cfg["template"], cfg["n_prompts"], cfg["seed"], node, prompt)
    st.plotly_chart(charts.attention_heatmap(pattern, tokens, node), width="stretch", key="circ_attn")
