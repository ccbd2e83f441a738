"""Panels of the Universality page that are more than a chart: a matched pair in context."""
from __future__ import annotations

import streamlit as st

from sae_app import contexts, feature_panels as fp, universality_cache as uc
from sae_core.errors import SAECoreError


def pair_in_context(root: str, art, r: dict, cfg: dict) -> None:
    """Choose a matched pair (strongest first); both features' top contexts side by side, each
    with a button that opens it in the feature browser at its model and hook."""
    pick = st.selectbox("Pair in context", uc.pair_options(str(art.path), art.created), key="uni_pair",
                        format_func=lambda i: uc.pair_label(r["pairs"][i]))
    pair = r["pairs"][pick]
    try:
        ctx = uc.pair_contexts(root, str(art.path), art.created, pick)
    except SAECoreError as e:
        st.warning(str(e))
        ctx = None
    sides = st.columns(2)
    for col, side, model, hook in zip(sides, "ab", (cfg["model_a"], cfg["model_b"]), (cfg["hook_a"], cfg["hook_b"])):
        col.markdown(f"**{model}** `{hook}`, feature **{pair[side]}** (fires on {pair[f'fires_{side}']:,} tokens)")
        if ctx is not None:
            col.html(contexts.examples_html(ctx[side], max((e.value for e in ctx[side]), default=0.0)))
        if col.button(f"Open feature {pair[side]} in the feature browser", key=f"uni_open_{side}",
                      on_click=fp.open_later, args=(model, hook, r["saes"][side], pair[side])):
            st.switch_page("views/features.py")
