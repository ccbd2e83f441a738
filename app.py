"""SAE Studio: the Streamlit entry point, a router over ``views/``.

Run with ``streamlit run app.py`` (or ``make app``). The shared sidebar (workspace, model, hook) is
rendered here, before the page, so its choices persist across pages; pages read them through
``sae_app.sidebar.current()``. Pages are listed explicitly: with ``st.navigation`` Streamlit no
longer discovers ``views/`` by itself.
"""
import streamlit as st

from sae_app import sidebar

st.set_page_config(page_title="SAE Studio", page_icon=":material/biotech:", layout="wide")

PAGES = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/activations.py", title="Activations", icon=":material/database:"),
    st.Page("views/sampled_sae.py", title="Sampled-SAE", icon=":material/tune:"),
    st.Page("views/features.py", title="Features", icon=":material/search:"),
    st.Page("views/steering.py", title="Steering & switches", icon=":material/toggle_on:"),
    st.Page("views/universality.py", title="Universality", icon=":material/compare_arrows:"),
    st.Page("views/circuits.py", title="Circuits", icon=":material/account_tree:"),
]

page = st.navigation(PAGES)
sidebar.render()
page.run()
