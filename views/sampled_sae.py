"""Sampled-SAE: sweep l (and the scoring rule) and watch reconstruction, sparsity and loss move."""
import pandas as pd
import streamlit as st

from sae_app import demo_build, jobs, sidebar, sweep_cache, sweep_charts as charts, sweep_panels, text_input
from sae_core.errors import SAECoreError
from sae_core.training.sweep import TRAINING_CURVES, SweepConfig, fvu_warnings as sweep_warnings, text_sources

sel = sidebar.current()
st.title("Sampled-SAE: the l trade-off")
st.write("Sampled-SAE scores every latent over the batch (L2 norm, squared L2 or entropy), keeps a pool of K·l "
         "latents, then runs BatchTopK inside it. l = 1: every token draws from K shared latents; "
         "large l: plain BatchTopK. `sae-core sweep` runs the same sweep from the shell.")
for problem in (sel.workspace_error, sel.model_error):
    if problem:
        st.error(problem)

with st.expander("Run a new sweep", expanded=False):
    c1, c2, c3, c4 = st.columns(4)
    k = c1.number_input("K", 1, 4096, 16, key="sw_k")
    d_sae = c2.number_input("d_sae", 16, 1 << 17, 512, step=128, key="sw_d_sae")
    tokens = c3.number_input("training tokens per SAE", 10_000, 100_000_000, 200_000, step=50_000, key="sw_tokens")
    harvest_tokens = c4.number_input("tokens to harvest", 5_000, 100_000_000, 100_000, step=50_000, key="sw_harvest")
    ls = st.multiselect("values of l", [1, 2, 4, 8, 16, 32, 64], default=[1, 2, 4, 8, 16], key="sw_ls")
    r1, r2 = st.columns([3, 1])
    rules = r1.multiselect("scoring rules", ["l2", "l2sq", "entropy"], default=["l2", "entropy"], key="sw_rules")
    pool_rule = r2.selectbox("pool", ["top", "sample"], key="sw_pool", help=(
        "top: the K·l best-scoring latents; sample: K·l latents drawn in proportion to their score"))
    text = text_input.text_source_input("sw")
    if st.button("Run sweep", type="primary", disabled=not sel.ready or text is None, key="sw_run"):
        try:  # refused here, before the harvest: K > d_sae, K·l > d_sae (plain BatchTopK), no l, ...
            sc = SweepConfig(k=int(k), d_sae=int(d_sae), ls=tuple(float(v) for v in ls), scorings=tuple(rules),
                             pool_rule=pool_rule, tokens=int(tokens))
        except SAECoreError as e:
            st.error(str(e))
        else:
            jobs.run_job("Running the sweep…", lambda bar: sweep_cache.run_sweep(
                sel.workspace_root, sel.model_name, sel.hook, sc, n_tokens_harvest=int(harvest_tokens), text=text,
                on_progress=lambda done, total, text: bar.progress(done / total, text=text)), select_key="sw_sweep")

sweeps = [] if sel.workspace_error else sweep_cache.list_sweeps(sel.workspace_root, sel.model_name, sel.hook)
if not sweeps:
    demo_build.wait_for(sel.workspace_root, "sweep")
    st.info(f"No sweep for `{sel.model_name}` at `{sel.hook}` yet: run one above, or `sae-core demo`.")
    st.stop()
by_name = {a.name: a for a in sweeps}
if st.session_state.get("sw_sweep") not in by_name:
    st.session_state["sw_sweep"] = sweeps[0].name
art = by_name[st.selectbox("Sweep", list(by_name), key="sw_sweep",
                           format_func=lambda n: charts.sweep_settings(by_name[n].meta))]
table = sweep_cache.sweep_table(str(art.path), art.created)
st.caption(f"Sweep artifact `{art.name}`")
with st.expander("Method: the trainer against dictionary_learning's BatchTopK trainer"):
    st.dataframe(pd.DataFrame(sweep_cache.sweep_method(str(art.path), art.created)).set_index("step"),
                 width="stretch")
for warning in sweep_warnings(table):
    st.warning(warning)
st.caption(" · ".join(text_sources(table)))
shown = st.segmented_control("Scoring rule", ["l2", "l2sq", "entropy"], selection_mode="multi",
                             default=sorted(set(table["scoring"].dropna())), key="sw_show")

left, right = st.columns(2)
picked = []
for i, (col, metric) in enumerate([(left, "fvu"), (right, "ce_loss_recovered"),
                                   (left, "distinct_latents_per_batch"), (right, None)]):
    if metric is not None and metric not in table:
        continue
    fig = charts.sweep_vs_l(table, metric, shown) if metric else charts.sweep_frontier(table, shown)
    event = col.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode="points", key=f"sw_fig{i}")
    picked += [p["customdata"][0] for p in (event.selection.points if event else []) if p.get("customdata")]
sweep_panels.evaluate_button(sel.workspace_root, art, table)
picked += sweep_panels.tradeoff(table, shown or [])
if picked:  # named by its settings; the artifact's hash name only in the caption
    name = charts.sae_settings(table[table["sae"] == picked[-1]].iloc[0])
    st.success(f"Selected SAE: **{name}**.")
    st.caption(f"SAE artifact `{picked[-1]}`")
    if st.button(f"Open its features in the feature browser: {name}", type="primary", key="sw_open"):
        st.session_state["fb_open_sae"] = picked[-1]
        st.switch_page("views/features.py")

sweep_panels.lottery(sel.workspace_root, table)

st.subheader("Training curves")
curves = sweep_cache.training_curves(sel.workspace_root, str(art.path), art.created)
if len(curves):
    metric = st.segmented_control("Curve", list(TRAINING_CURVES), default="sq_err", key="sw_curve",
                                  format_func=lambda m: TRAINING_CURVES[m][0])
    st.plotly_chart(charts.training_curves(curves, metric or "sq_err", shown), width="stretch", key="sw_curves")
else:
    st.info("This sweep's SAEs have no training history in the workspace.")

sweep_panels.sae_table(table)
st.download_button("Download CSV", table.to_csv(index=False).encode(), file_name=f"{art.name}.csv",
                   mime="text/csv", key="sw_csv")
