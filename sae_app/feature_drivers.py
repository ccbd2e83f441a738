"""The Features page's "What drives this feature" panel: heads, MLPs and input tokens, by attribution.

``circuits.drivers.feature_drivers`` attributes the feature's activation at the peak of each of its
top contexts to every upstream head and MLP (gradient x activation difference against mean
ablation, the circuits code's method) and checks the top ones by exact mean ablation (Spearman).
The panel draws the components as a small graph and a table; where the workspace holds a circuits
study of the same model, each component links to its panel on the Circuits page.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from sae_app import circuits_cache, contexts, feature_cache, feature_charts, session
from sae_core.errors import SAECoreError
from sae_core.models.loading import hook_layer

N_PROMPTS = 8   # top contexts read
N_SHOWN = 12    # components drawn and listed


@st.cache_data(max_entries=16, show_spinner="Attributing the feature to heads and MLPs…")
def drivers(sae_path: str, fingerprint: str, model_name: str, hook: str, feature: int, prompts: tuple[str, ...]):
    from sae_core.circuits.drivers import feature_drivers

    sae, _ = feature_cache.load_sae(sae_path)
    with session.using(model_name) as (model,):
        return feature_drivers(model, sae, hook, feature, list(prompts))


def contexts_of(view, spaced: bool, specials: set[str]) -> list[str]:
    """The feature's top contexts, each from its document's start to its peak (the attribution's prompts)."""
    return [t for ex in view.top[:N_PROMPTS] if (t := ex.prompt(spaced, specials))]


def _open_component(study_label: str, node: str) -> None:
    st.session_state["circ"], st.session_state["circ_node"] = study_label, node


def drivers_panel(view, index, sae_path: str, fingerprint: str, sel) -> None:
    if not st.toggle("What drives this feature: heads, MLPs and tokens", key="fb_drivers"):
        return
    specials = set(session.load_model(sel.model_name).tokenizer.all_special_tokens)
    prompts = contexts_of(view, index.spaced, specials)
    if not prompts:
        st.info(f"Feature {view.index} never fired in the index: it has no contexts to attribute.")
        return
    try:
        d = drivers(sae_path, fingerprint, sel.model_name, sel.hook, view.index, tuple(prompts))
    except SAECoreError as e:
        st.error(str(e))
        return
    shown = d.components[:N_SHOWN]
    st.plotly_chart(feature_charts.drivers_graph([(c.node, c.attribution) for c in shown], d.feature,
                                                 hook_layer(d.hook)), key="fb_drivers_fig")
    rho = "n/a" if d.spearman is None else f"{d.spearman:.2f}"
    st.caption(f"Attribution: gradient x (output - its mean) of the feature's activation at the peak of its top "
               f"{d.n_prompts} contexts (sum {d.metric:.3g}), each head and MLP upstream of `{d.hook}`; the estimate "
               f"of what mean-ablating it removes. Checked by ablating the top {d.n_validated} exactly: Spearman "
               f"rho {rho}.")
    st.dataframe(pd.DataFrame([{"component": c.node, "attribution": c.attribution, "exact ablation": c.exact}
                               for c in shown]), hide_index=True, width="stretch",
                 column_config={"attribution": st.column_config.NumberColumn(format="%+.4f"),
                                "exact ablation": st.column_config.NumberColumn(format="%+.4f")})
    _links(sel, [c.node for c in shown[:6]])
    st.markdown("**Which tokens drive it** (gradient x (embedding - its mean); orange raises it, blue lowers it)")
    scale = max((abs(a) for row in d.positions for a in row), default=0.0)
    for tokens, attr in zip(d.tokens[:4], d.positions[:4]):
        st.html(contexts.signed_html(tokens, attr, scale, d.spaced))


def _links(sel, nodes: list[str]) -> None:
    studies = [a for a in circuits_cache.list_studies(sel.workspace_root) if a.model == sel.model_name]
    if not studies:
        st.caption(f"No circuits study of {sel.model_name} in this workspace: build one on the Circuits page to "
                   "open these components there.")
        return
    art = studies[0]
    label = circuits_cache.study_label(art)
    cols = st.columns(len(nodes))
    for c, node in zip(cols, nodes):
        if c.button(node, key=f"fb_drv_{node}", help=f"open {node} on the Circuits page (study {art.name})",
                    on_click=_open_component, args=(label, node)):
            st.switch_page("views/circuits.py")
