"""Universality: do two models' SAEs find the same features? Matching, measures against nulls."""
import streamlit as st

from sae_app import jobs, sidebar, universality_cache as uc, universality_charts as charts
from sae_app import universality_panels as panels
from sae_core.io import dumps_json
from sae_core.universality.job import pairs_csv

sel = sidebar.current()
st.title("Feature universality")
st.write("SAE features of two models matched by how their activations correlate on the same tokens, then "
         "the matched features' decoder directions compared as spaces (SVCCA, RSA, CKA, mutual nearest "
         "neighbours), each against chance: the same spaces with the pairing shuffled, and random features of "
         "each SAE (arXiv 2410.06981).")
if sel.workspace_error:
    st.error(sel.workspace_error)
    st.stop()
results = uc.list_results(sel.workspace_root)
if not results:
    jobs.offer_build("No universality result in this workspace yet: compare zoo:tiny-a with zoo:tiny-b (trains an "
                     "SAE for each, about two minutes), or `sae-core universality` / `sae-core demo`.",
                     "Compare zoo:tiny-a with zoo:tiny-b", key="uni_build", title="Comparing features…",
                     build=uc.build_demo, root=sel.workspace_root, select_key="uni", kind=uc.KIND)
by_name = {a.name: a for a in results}
panels.select_pending()
art = by_name[st.selectbox("Result", list(by_name), key="uni", format_func=lambda n: uc.result_label(by_name[n]))]
u = uc.open_result(str(art.path), art.created)
r, cfg = u.results, u.config
st.caption(f"{r['n_tokens']:,} paired tokens of {r.get('codes', 'sparse')} codes; SAEs `{r['saes']['a']}` "
           f"({r['d_sae']['a']} features, {r['alive']['a']} alive) and `{r['saes']['b']}` ({r['d_sae']['b']} features, "
           f"{r['alive']['b']} alive); matching: {r['match_label']}; {r['runs']} null runs per measure.")
panels.method(sel.workspace_root, r, cfg)
for w in r["warnings"]:
    st.warning(w)

names = charts.ordered(r)
cols = st.columns(len(names))
for col, name, s in zip(cols, names, (r["scores"][n] for n in names)):
    col.metric(charts.MEASURE_NAMES.get(name, name), f"{s['value']:.3f}",
               f"null {s['shuffled']['null_mean']:.3f}, p={s['shuffled']['p']:.3g}", delta_color="off")
st.plotly_chart(charts.scores_vs_nulls(r), width="stretch", key="uni_scores")
left, right = st.columns(2)
if r["best_corr_hist"]:
    left.plotly_chart(charts.best_correlation_histogram(r), width="stretch", key="uni_corr")
right.plotly_chart(charts.filter_funnel(r), width="stretch", key="uni_funnel")
measure = left.selectbox("Null distribution of", names, key="uni_null_measure",
                         format_func=lambda m: charts.MEASURE_NAMES.get(m, m))
left.plotly_chart(charts.null_histogram(r, measure), width="stretch", key="uni_null")
svcca = r["scores"].get("svcca")
if svcca:
    right.markdown(f"**SVCCA kept** {svcca['used']['k_x']} directions of A ({100 * svcca['used']['var_x']:.1f}% of "
                   f"the variance) and {svcca['used']['k_y']} of B ({100 * svcca['used']['var_y']:.1f}%)"
                   + (" (one each, as the authors' code)" if svcca["used"]["paper_compat"] else "") + ".")

st.subheader("Semantic subspaces")
sub = r.get("subspaces") or {}
scored = [m for m in charts.MEASURE_NAMES if any("value" in g["scores"].get(m, {}) for g in sub.values())]
if scored:
    sm = st.selectbox("Measure within groups", scored, key="uni_sub_measure",
                      format_func=lambda m: charts.MEASURE_NAMES.get(m, m))
    st.plotly_chart(charts.subspaces(r, sm), width="stretch", key="uni_sub")
st.caption(uc.subspace_notes(r))
panels.keyword_groups(sel.workspace_root, r, cfg)

st.subheader(f"Matched pairs ({r['n_pairs']})")
st.dataframe(uc.pairs_table(str(art.path), art.created), hide_index=True, width="stretch", height=320,
             column_config={"correlation": st.column_config.NumberColumn(format="%.3f")})
panels.pair_in_context(sel.workspace_root, art, r, cfg)
panels.pair_steering(sel.workspace_root, art, r, cfg)
d1, d2 = st.columns(2)
d1.download_button("Download all results (JSON)", dumps_json({"config": cfg, "results": r}),
                   file_name=f"{art.name}.json", mime="application/json", key="uni_json")
d2.download_button("Download the pairs (CSV)", pairs_csv(r["pairs"]), file_name=f"{art.name}-pairs.csv",
                   mime="text/csv", key="uni_csv")

st.subheader("Layer by layer")
grids = uc.list_grids(sel.workspace_root)
if not grids:
    st.info("No layer grid yet: every residual layer of zoo:tiny-a against every one of zoo:tiny-b (8 pairs, "
            "a few minutes), or `sae-core universality --layers`.")
    jobs.build_button("Build the layer grid", key="uni_grid_build", title="Comparing every layer pair…",
                      build=uc.build_grid, root=sel.workspace_root, select_key="uni_grid")
else:
    grid = uc.open_grid(str(grids[0].path), grids[0].created)
    g, base = grid.results, grid.config["base"]
    c1, c2 = st.columns([1, 2])
    gm = c1.selectbox("Measure", [m for m in charts.MEASURE_NAMES if m in g["measures"]], key="uni_grid_measure",
                      format_func=lambda m: charts.MEASURE_NAMES[m])
    show = c2.segmented_control("Cells show", list(charts.HEAT_SHOWS), default="value", key="uni_grid_show",
                                format_func=charts.HEAT_SHOWS.get) or "value"
    st.plotly_chart(charts.layer_heatmap(g, gm, base["model_a"], base["model_b"], show), width="stretch",
                    key="uni_heat")
    st.caption(f"Each cell: {base['d_sae']}-feature SAEs on {base['n_tokens']:,} paired tokens, its own matching "
               "and shuffled null; the best cell is tested against the null of the maximum over all cells.")
    for c in g["cells"]:
        if "error" in c:
            st.warning(f"{c['hook_a']} x {c['hook_b']}: {c['error']}")
