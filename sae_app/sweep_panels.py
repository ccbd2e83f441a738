"""Panels of the Sampled-SAE page beyond its first charts (issue #30): the trade-off view (a small
chart per metric, which l wins which, the Pareto scatter) and the activation lottery."""
from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st

from sae_app import jobs, sweep_cache, tradeoff_charts as tc
from sae_core.evaluation.tradeoff import BY_COLUMN, TRADEOFF_METRICS, best_l, verdict
from sae_core.training.sweep import dead_by_design, dead_by_design_caption


def _clicked(event) -> list[str]:
    return [p["customdata"][0] for p in (event.selection.points if event else []) if p.get("customdata")]


def evaluate_button(root: str, art, table: pd.DataFrame) -> None:
    """Offer to evaluate the sweep's SAEs downstream when its table lacks a metric."""
    missing = [m for m in ("probing", "absorption", "lottery") if m not in sweep_cache.evaluated(table)]
    if not missing:
        return
    st.info(f"This sweep's table has no {', '.join(missing)} yet. Evaluating runs SAEBench-style sparse probing "
            "on the zoo's labelled tasks, first-letter absorption and the activation lottery for every SAE "
            "(`sae-core sweep --evaluate probing,absorption,lottery` does the same).")
    jobs.build_button("Evaluate every SAE of this sweep", key="sw_eval", title="Evaluating the sweep's SAEs…",
                      build=partial(sweep_cache.evaluate_sweep, path=str(art.path), model_name=art.model),
                      root=root, select_key="sw_evaluated", disabled=art.model is None)


def tradeoff(table: pd.DataFrame, shown: list[str]) -> list[str]:
    """Every metric against l, the verdict, the Pareto scatter; the SAEs of clicked points. Drawn
    once the sweep carries a downstream metric: before, its charts would repeat the ones above."""
    if not {"probing", "absorption"} & set(sweep_cache.evaluated(table)):
        return []
    st.subheader("The trade-off, metric by metric")
    present = [m for m in TRADEOFF_METRICS if m.column in table and table[m.column].notna().any()]
    st.caption(tc.grid_legend(shown))
    event = st.plotly_chart(tc.tradeoff_grid(table, [m.column for m in present], shown), width="stretch",
                            on_select="rerun", selection_mode="points", key="sw_grid")
    picked = _clicked(event)
    best = best_l(table, shown)
    st.markdown(f"**{verdict(best)}**")
    if best:
        st.dataframe(pd.DataFrame(best).drop(columns=["column", "l"]).rename(columns={
            "metric": "metric", "better": "better when", "best": "best Sampled-SAE", "value": "its value",
            "batchtopk": "BatchTopK", "topk": "TopK"}), hide_index=True, width="stretch")
    names = [m.column for m in present]
    c1, c2 = st.columns(2)
    x = c1.selectbox("Pareto: x axis", names, index=names.index("l0") if "l0" in names else 0, key="sw_par_x",
                     format_func=lambda c: BY_COLUMN[c].title)
    y_default = next((c for c in ("probe_sae_top_1", "fvu") if c in names), names[-1])
    y = c2.selectbox("Pareto: y axis", names, index=names.index(y_default), key="sw_par_y",
                     format_func=lambda c: BY_COLUMN[c].title)
    event = st.plotly_chart(tc.pareto(table, x, y, shown), width="stretch", on_select="rerun",
                            selection_mode="points", key="sw_pareto")
    return picked + _clicked(event)


def lottery(root: str, table: pd.DataFrame) -> None:
    """One SAE's lottery scatter, a second overlaid on request, and their numbers."""
    st.subheader("The activation lottery")
    st.caption("Under BatchTopK the batch's K·B slots go to the largest activations: rare latents of high "
               "magnitude can win slots that frequent, informative latents lose. Each point is a latent; ringed: "
               "the top 1% by magnitude under plain BatchTopK on the SAE's own pre-activations.")
    choices = tc.sae_choices(table)
    have = [n for n in choices if sweep_cache.lottery(root, n) is not None]
    if not have:
        st.info("No SAE of this sweep has its lottery measured yet: evaluate the sweep above, or "
                "`sae-core evaluate --sae NAME --lottery`.")
        return
    c1, c2 = st.columns(2)
    first = c1.selectbox("SAE", have, key="sw_lot_a", format_func=choices.get)
    second = c2.selectbox("Overlay a second SAE", [None] + [n for n in have if n != first], key="sw_lot_b",
                          format_func=lambda n: "none" if n is None else choices[n])
    shown = [(choices[n], sweep_cache.lottery(root, n)) for n in (first, second) if n]
    st.plotly_chart(tc.lottery_scatter(shown), width="stretch", key="sw_lottery")
    st.dataframe(tc.lottery_table(shown), hide_index=True, width="stretch")


def sae_table(table: pd.DataFrame) -> None:
    """Every SAE of the sweep with its metrics, downstream ones included, and the dead-latents note."""
    st.subheader("All SAEs of this sweep")
    cols = ["arch", "scoring", "pool_rule", "l", "k", "d_sae", "l0", "l0_batch_rule", "fvu", "fvu_batch_rule",
            "explained_variance", "ce_loss_recovered", "ce_loss_recovered_batch_rule",
            "kl_recovered", "kl_recovered_batch_rule", "distinct_latents_per_batch", "pairwise_overlap", "top_mass_fraction",
            "dead_fraction", "dead_note", "dense_fraction", "probe_sae_top_1", "probe_sae_top_5", "probe_random_top_1",
            "absorption_rate", "lottery_top_share", "sae"]
    listed = table.assign(dead_note=dead_by_design(table))  # a Sampled-SAE's pool bounds its live latents
    st.dataframe(listed[[c for c in cols if c in listed]], hide_index=True, width="stretch", column_config={
        "fvu": "FVU (inference)", "fvu_batch_rule": "FVU (batch rule)", "l0": "L0 (inference)",
        "l0_batch_rule": "L0 (batch rule)", "dead_fraction": "never active on eval", "dead_note": "why so many never fire",
        "ce_loss_recovered": "CE recovered (inference, vs zero ablation)",
        "ce_loss_recovered_batch_rule": "CE recovered (batch rule)", "kl_recovered": "KL recovered (inference)",
        "kl_recovered_batch_rule": "KL recovered (batch rule)", "probe_sae_top_1": "probing k=1",
        "probe_sae_top_5": "probing k=5", "probe_random_top_1": "probing k=1, random latents",
        "absorption_rate": "absorption rate", "lottery_top_share": "slots won by the top 1%"})
    if caption := dead_by_design_caption(table):
        st.caption(caption)
