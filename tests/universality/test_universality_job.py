"""A universality result end to end on the zoo: zoo:tiny-a against zoo:tiny-b, SAEs trained by the
job, every measure far above its nulls, and the inputs it must refuse."""
import csv
import io
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sae_core.universality import UniversalityError
from sae_core.universality.analysis import AnalysisConfig
from sae_core.universality.job import KIND, Universality, UniversalityConfig, result_name, universality_to_workspace
from sae_core.universality.matching import MatchConfig
from sae_core.workspace import Workspace
from tests.helpers import APP, plotly_values, small_universality_config

SMALL = small_universality_config()


@pytest.fixture(scope="module")
def uni(tmp_path_factory):
    """The small universality result, built here (the job's progress recorded). When the browser
    tests built the small demo in this run (the same configuration), its paired harvest, their
    activations and its two SAEs are copied first, so only the comparison itself runs again."""
    import os
    import shutil

    from tests.helpers import SMALL_DEMO_ENV

    dest = tmp_path_factory.mktemp("uni") / "ws"
    demo = Workspace(os.environ[SMALL_DEMO_ENV]) if SMALL_DEMO_ENV in os.environ else None
    if demo is not None and (made := demo.get(KIND, result_name(SMALL))) is not None:
        r = Universality.open(made.path).results
        paired = demo.get("paired", r["paired"])
        for kind, name in [("paired", paired.name), ("sae", r["saes"]["a"]), ("sae", r["saes"]["b"])] + [
                ("activations", n) for n in paired.meta["activations"]]:
            shutil.copytree(demo.get(kind, name).path, dest / kind / name)
    ws = Workspace(dest)
    ws.reindex()
    seen = []
    art = universality_to_workspace(ws, SMALL, on_progress=lambda d, t, text: seen.append((d, t, text)))
    return ws, art, seen


@pytest.mark.slow  # builds the whole universality study
def test_zoo_models_share_features_far_above_chance(uni):
    ws, art, seen = uni
    u = Universality.open(art.path)
    r = u.results
    assert [s[0] for s in r["steps"]] == ["many-to-one", "no non-concept top token", "a shared top token",
                                           "correlation > 0.1"]
    counts = [s[1] for s in r["steps"]]
    assert counts == sorted(counts, reverse=True) and counts[0] == r["alive"]["b"]
    n = r["n_pairs"]
    assert n == counts[-1] == len(r["pairs"]) >= 30
    assert r["runs"] == (30 if n <= 100 else 20)
    for name, s in r["scores"].items():
        sh = s["shuffled"]
        # every measure beats every shuffled run: p is the smallest it can be
        assert sh["p"] == pytest.approx(1 / (1 + r["runs"])), name
        assert s["value"] > max(sh["null"]) and len(sh["null"]) == r["runs"]
        lo, hi = s["ci95"]
        assert lo <= s["value"] <= hi
    assert r["scores"]["cka_debiased"]["shuffled"]["null_mean"] == pytest.approx(0, abs=0.05)
    # pairs are what the correlation says: sorted by nothing, but each above the threshold with top tokens
    assert all(p["corr"] > 0.1 and set(p["top_a"]) & set(p["top_b"]) for p in r["pairs"])
    assert {"a", "b", "corr", "top_a", "top_b"} <= set(r["pairs"][0])
    # the best correlation of each B feature is far higher against A's codes on the same tokens
    h = r["best_corr_hist"]
    centres = (np.array(h["bins"][:-1]) + np.array(h["bins"][1:])) / 2
    assert np.dot(centres, h["paired"]) / sum(h["paired"]) > np.dot(centres, h["null"]) / sum(h["null"]) + 0.2
    # the export and the registry
    rows = list(csv.reader(io.StringIO((art.path / "pairs.csv").read_text())))
    assert rows[0][:3] == ["a", "b", "corr"] and len(rows) == n + 1
    assert int(rows[1][0]) == r["pairs"][0]["a"] and float(rows[1][2]) == pytest.approx(r["pairs"][0]["corr"])
    assert ws.list(KIND, uses="zoo:tiny-a")[0].name == art.name
    assert art.meta["svcca"] == r["scores"]["svcca"]["value"]
    assert seen[0][2].startswith("harvesting") and any("training a BatchTopK SAE" in t for _, _, t in seen)
    # semantic subspaces: each zoo keyword group's pairs, scored where there are enough
    from sae_core.universality.keyword_groups import zoo_groups
    from sae_core.universality.subspaces import members
    sub = r["subspaces"]
    assert set(sub) == set(zoo_groups())
    for g in sub.values():
        assert g["n_pairs"] == len(members(r["pairs"], tuple(g["words"])))
        assert bool(g["scores"]) == (g["n_pairs"] >= 10)
    assert any(g["scores"] for g in sub.values())
    # a second call finds the artifact instead of rebuilding it
    assert universality_to_workspace(ws, SMALL).path == art.path


@pytest.mark.slow  # builds the whole universality study
def test_a_pairs_top_activations_in_context_on_both_sides(uni, tiny_a):
    """Each side's contexts peak on that feature's top tokens, in order, with the values the SAE
    gives when the whole store is encoded afresh."""
    from sae_core.activations.paired import open_paired
    from sae_core.sae.io import load_sae
    from sae_core.universality.contexts import pair_contexts

    ws, art, _ = uni
    u = Universality.open(art.path)
    i = max(range(len(u.results["pairs"])), key=lambda j: u.results["pairs"][j]["corr"])
    p = u.results["pairs"][i]
    ctx = pair_contexts(ws, u, i, tiny_a.tokenizer)
    pair = open_paired(ws, ws.get("paired", u.results["paired"]))
    for side, store in (("a", pair.a), ("b", pair.b)):
        examples = ctx[side]
        assert [e.tokens[e.peak] for e in examples] == p[f"top_{side}"] and len(examples) == len(p[f"rows_{side}"])
        with torch.no_grad():
            codes = load_sae(ws.get("sae", u.results["saes"][side]).path).encode(store.read_all())[:, p[side]]
        codes[torch.isin(store.token_ids(), torch.tensor(tiny_a.tokenizer.all_special_ids))] = 0  # not compared
        want = codes.topk(len(examples)).values  # the highest activations of the whole stream
        assert [e.value for e in examples] == pytest.approx(want.tolist(), rel=1e-4)
        doc, pos = store.row_keys()
        for e, r in zip(examples, p[f"rows_{side}"]):
            assert (e.sequence, e.position) == (int(doc[r]), int(pos[r])) and 1 <= len(e.tokens) <= 14
            assert e.acts[e.peak] == e.value
    with pytest.raises(UniversalityError, match="matched pairs"):
        pair_contexts(ws, u, len(u.results["pairs"]), tiny_a.tokenizer)


@pytest.mark.slow  # builds the whole universality study
def test_named_saes_are_checked_against_their_hooks(uni):
    ws, art, _ = uni
    u = Universality.open(art.path)
    a, b = u.results["saes"]["a"], u.results["saes"]["b"]
    swapped = UniversalityConfig(**{**SMALL.__dict__, "sae_a": b, "sae_b": a})
    with pytest.raises(UniversalityError, match="SAE A reads width 256, but the activations of zoo:tiny-a"):
        universality_to_workspace(ws, swapped)
    with pytest.raises(UniversalityError, match="no SAE named 'nope'"):
        universality_to_workspace(ws, UniversalityConfig(**{**SMALL.__dict__, "sae_a": "nope"}))


@pytest.mark.slow  # builds the whole universality study
def test_no_pairs_left_is_a_clear_message(uni):
    ws, art, _ = uni
    u = Universality.open(art.path)
    strict = UniversalityConfig(**{**SMALL.__dict__, "sae_a": u.results["saes"]["a"], "sae_b": u.results["saes"]["b"],
                                   "match": MatchConfig(min_corr=0.999)})
    with pytest.raises(UniversalityError, match=r"only \d+ matched pair\(s\) left after filtering \(many-to-one"):
        universality_to_workspace(ws, strict)


def test_models_with_different_tokenizers_are_refused(tmp_path, tiny_a):
    from sae_core.errors import SAECoreError

    def load(name):
        if name == "zoo:tiny-b":
            return SimpleNamespace(tokenizer=SimpleNamespace(get_vocab=lambda: {"a": 0}))
        return tiny_a
    with pytest.raises(SAECoreError, match="tokenizer"):
        universality_to_workspace(Workspace(tmp_path / "ws"), SMALL, load=load)


def test_bad_configurations():
    with pytest.raises(UniversalityError, match="n_tokens=10"):
        UniversalityConfig(n_tokens=10)
    with pytest.raises(UniversalityError, match="measures"):
        AnalysisConfig(measures=("svcca", "procrustes"))
    with pytest.raises(UniversalityError, match="at least 10"):
        AnalysisConfig(runs=5)


@pytest.mark.slow  # builds the whole universality study
def test_cli_prints_the_librarys_scores(uni):
    import json

    from typer.testing import CliRunner

    from sae_core.cli import app

    ws, art, _ = uni
    r = Universality.open(art.path).results
    args = ["universality", "--tokens", "30000", "--sae-a", r["saes"]["a"], "--sae-b", r["saes"]["b"],
            "--runs", "20", "-w", str(ws.root)]
    out = CliRunner().invoke(app, args + ["--json"], env={"COLUMNS": "300"})
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    # the same SAEs, tokens and matching: the same pairs and paired values as the library's result
    assert got["n_pairs"] == r["n_pairs"] and got["steps"] == r["steps"]
    for m, s in r["scores"].items():
        assert got["scores"][m]["value"] == pytest.approx(s["value"], abs=1e-9)
        assert got["scores"][m]["p"] == pytest.approx(1 / (1 + got["runs"]))
    table = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert table.exit_code == 0, table.output
    line = next(ln for ln in table.output.splitlines() if ln.startswith("svcca"))
    assert f"{r['scores']['svcca']['value']:.3f}" in line
    assert re.search(rf"^correlation > 0.1 +{r['n_pairs']} +{r['step_mean_corr'][-1]:.3f}$", table.output, re.M)
    assert "mode: default (sparse correlated" in table.output
    # --paper: every step as the authors; a step option given with it replaces theirs (a custom mix)
    paper = json.loads(CliRunner().invoke(app, args + ["--paper", "--json"], env={"COLUMNS": "300"}).output)
    assert (paper["mode"], paper["codes"]) == ("paper", "pre_acts")
    assert [s for s, _ in paper["steps"]][3:] == ["one per A feature (first)", "correlation > 0.1"]
    assert {"MonthNames", "Countries"} <= set(paper["subspaces"]) and paper["subspaces"]["Countries"]["in_vocabulary"] == []
    import sae_core.universality.job as job
    asked = []

    def stop(ws, cfg, **kw):
        asked.append(cfg)
        raise UniversalityError("stopped here: the configuration is what is checked")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(job, "universality_to_workspace", stop)
        CliRunner().invoke(app, args + ["--paper", "--dedupe", "none", "--json"], env={"COLUMNS": "300"})
    [mixed] = asked
    assert (mixed.mode, mixed.codes, mixed.match.dedupe, mixed.match.order) == ("custom", "pre_acts", "none", "paper")
    bad = CliRunner().invoke(app, args + ["--rule", "greedy"], env={"COLUMNS": "300"})
    assert bad.exit_code == 2 and "matching rule 'greedy'" in bad.output


@pytest.mark.slow  # builds the whole universality study
def test_universality_page_shows_the_librarys_scores_and_pairs(uni, monkeypatch, tmp_path, tiny_a):
    import json

    from streamlit.testing.v1 import AppTest

    app = APP
    ws, art, _ = uni
    r = Universality.open(art.path).results
    monkeypatch.setenv("SAE_STUDIO_WORKSPACE", str(ws.root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(app, default_timeout=120).run()
    at.switch_page("views/universality.py").run()
    assert not at.exception and not at.error
    box = at.selectbox(key="uni")
    box.set_value(art.name).run()  # the CLI test may add a newer one
    assert f"zoo:tiny-a blocks.1.hook_resid_post vs zoo:tiny-b blocks.3.hook_resid_post ({art.name})" in box.options
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["SVCCA"] == f"{r['scores']['svcca']['value']:.3f}"
    assert metrics["CKA (debiased)"] == f"{r['scores']['cka_debiased']['value']:.3f}"
    assert [w.value for w in at.warning] == r["warnings"]
    method, table = at.dataframe[0].value, at.dataframe[1].value  # the Method panel's, the pairs'
    assert method.loc["mode", "this result"] == r["mode"] == "default"
    assert method.loc["activations correlated", "this result"].startswith("the SAEs' sparse inference codes")
    best = max(r["pairs"], key=lambda p: p["corr"])
    assert len(table) == r["n_pairs"]
    assert (table.iloc[0]["A feature"], table.iloc[0]["B feature"]) == (best["a"], best["b"])
    from collections import Counter
    top, count = Counter(best["top_a"]).most_common(1)[0]
    assert table.iloc[0]["top tokens (A)"].startswith(top.strip() + (f" ×{count}" if count > 1 else ""))
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    bars = charts[0]["data"]
    order = ["svcca", "rsa", "cka", "cka_debiased", "mutual_knn"]
    assert bars[0]["x"] == ["SVCCA", "RSA", "CKA (biased)", "CKA (debiased)", "mutual kNN"]
    assert bars[0]["y"] == [r["scores"][m]["value"] for m in order]
    assert bars[1]["y"] == pytest.approx([r["scores"][m]["shuffled"]["null_mean"] for m in order])
    assert charts[3]["data"][0]["x"] == [n for _, n in r["steps"]]  # the filter funnel (right column)
    assert charts[3]["data"][0]["text"][-1] == f"{r['n_pairs']} (mean r {r['step_mean_corr'][-1]:.2f})"
    # the null histogram follows the chosen measure
    at.selectbox(key="uni_null_measure").set_value("rsa").run()
    hist = [json.loads(c.proto.spec) for c in at.get("plotly_chart")][2]  # left column, under the selector
    assert hist["data"][0]["x"] == pytest.approx(r["scores"]["rsa"]["shuffled"]["null"])
    # the strongest pair in context: each side's contexts peak on its top tokens
    pick = at.selectbox(key="uni_pair")
    assert pick.value == r["pairs"].index(best) and pick.options[0].startswith(f"A {best['a']} ↔ B {best['b']}")
    from sae_core.universality.contexts import pair_contexts
    ctx = pair_contexts(ws, Universality.open(art.path), pick.value, tiny_a.tokenizer)
    blocks = [h.proto.body for h in at.get("html")]
    assert len(blocks) == 2 and all(blocks)
    for body, side in zip(blocks, "ab"):
        assert body.count('class="tok"') == sum(len(e.tokens) for e in ctx[side])
        assert all(f"<code" in body and f"{e.value:.3g}" in body for e in ctx[side])
    # ... and B's feature opens in the feature browser, at B's model and hook, on B's SAE
    at.button(key="uni_open_b").click().run()
    assert not at.exception
    assert (at.session_state["model_name"], at.session_state["hook"]) == ("zoo:tiny-b", "blocks.3.hook_resid_post")
    assert at.session_state["fb_sae"] == r["saes"]["b"] and at.title[0].value == "Feature browser"
    _method_switch_and_keyword_groups(app, ws, art)
    # an empty workspace offers to build the comparison
    monkeypatch.setenv("SAE_STUDIO_WORKSPACE", str(tmp_path / "empty"))
    at = AppTest.from_file(app, default_timeout=120).run()
    at.switch_page("views/universality.py").run()
    assert not at.exception and "No universality result" in at.info[0].value
    assert at.button(key="uni_build").label == "Compare zoo:tiny-a with zoo:tiny-b"


def _method_switch_and_keyword_groups(app, ws, art):
    """The Method panel's switch runs the authors' computation on the same SAEs and shows it (its
    rows read from the new artifact); the user's keyword groups: bad JSON refused with the text
    kept, good groups scored on the same SAEs."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(app, default_timeout=120).run()
    at.switch_page("views/universality.py").run()
    at.selectbox(key="uni").set_value(art.name).run()
    key = "uni_twin_show" if any(b.key == "uni_twin_show" for b in at.button) else "uni_twin_build"
    at.button(key=key).click().run()
    assert not at.exception and not at.error
    paper = ws.get(KIND, at.selectbox(key="uni").value)
    r = Universality.open(paper.path).results
    assert r["mode"] == "paper" and r["saes"] == Universality.open(art.path).results["saes"]
    method = at.dataframe[0].value
    assert method.loc["mode", "this result"] == "paper"
    assert method.loc["activations correlated", "this result"].startswith("the SAEs' dense ReLU pre-activations")
    assert any("The authors' procedure" in c.value for c in at.caption)
    # ... and back: the default comparison the page started from, found though its SAEs were not named
    at.button(key="uni_twin_show").click().run()
    assert at.selectbox(key="uni").value == art.name
    bad = '{"months": "January"}'
    at.text_area(key="uni_groups_text").input(bad).run()
    at.button(key="uni_groups_build").click().run()
    assert "group 'months' must be a non-empty list of words" in at.error[0].value
    assert at.text_area(key="uni_groups_text").value == bad and at.selectbox(key="uni").value == art.name
    at.text_area(key="uni_groups_text").input('{"spring months": ["March", "April", "May"]}').run()
    at.button(key="uni_groups_build").click().run()
    assert not at.exception and not at.error
    mine = Universality.open(ws.get(KIND, at.selectbox(key="uni").value).path)
    assert mine.config["groups"] == {"spring months": ["March", "April", "May"]}
    assert list(mine.results["subspaces"]) == ["spring months"] and mine.results["mode"] == "default"


@pytest.mark.slow  # builds the whole universality study
def test_layer_grid_holds_every_hook_pair_and_tests_the_best_against_the_max(uni, monkeypatch):
    from sae_core.activations import job as harvest_job
    from sae_core.universality.grid import KIND as GRID, Grid, GridConfig, grid_to_workspace, heat

    ws, art, _ = uni
    seen, runs = [], []
    real = harvest_job.harvest_hooks
    monkeypatch.setattr(harvest_job, "harvest_hooks", lambda model, hooks, *a, **k: runs.append(hooks) or real(
        model, hooks, *a, **k))
    g_art = grid_to_workspace(ws, GridConfig(base=SMALL), on_progress=lambda d, t, text: seen.append((d, t)))
    # each model ran once, for the hooks the module's single result had not harvested yet
    assert runs == [["blocks.0.hook_resid_post"], [f"blocks.{j}.hook_resid_post" for j in range(3)]]
    g = Grid.open(g_art.path).results
    assert g["hooks_a"] == [f"blocks.{i}.hook_resid_post" for i in range(2)]
    assert g["hooks_b"] == [f"blocks.{j}.hook_resid_post" for j in range(4)]
    assert len(g["cells"]) == 8 and not any("error" in c for c in g["cells"])
    # the (1, 3) cell is the module's single-pair result, found rather than rebuilt
    cell = next(c for c in g["cells"] if (c["i"], c["j"]) == (1, 3))
    assert cell["artifact"] == art.name
    r = Universality.open(art.path).results
    assert heat(g, "svcca")[1, 3] == r["scores"]["svcca"]["value"]
    assert heat(g, "rsa", "n_pairs")[1, 3] == r["n_pairs"]
    assert len({c["artifact"] for c in g["cells"]}) == 8
    assert len(ws.list("sae")) == 6  # one SAE per (model, hook), shared by the cells that use it
    for m in g["measures"]:
        b = g["best"][m]
        h = heat(g, m)
        assert h[b["i"], b["j"]] == np.nanmax(h) == b["value"]
        best_cell = next(c for c in g["cells"] if (c["i"], c["j"]) == (b["i"], b["j"]))
        own = best_cell["scores"][m]
        sd = np.std(Universality.open(ws.get(KIND, best_cell["artifact"]).path).results["scores"][m]["shuffled"]["null"])
        # each run's maximum over eight shuffled cells is at least that cell's shuffled score, so
        # the means differ only by the noise of two 20-run samples
        assert b["max_null"]["null_mean"] >= own["null_mean"] - 3 * sd * np.sqrt(2 / 20)
        assert b["max_null"]["p"] >= own["p"] - 1e-12 and b["max_null"]["kind"] == "max over pairs"
    assert seen[0][0] < 1 and seen[-1][0] == 9 and seen[-1][1] == 10  # the harvest, 8 cells, the max null
    assert ws.list(GRID)[0].name == g_art.name


@pytest.mark.slow  # builds the whole universality study
def test_universality_page_draws_the_layer_grid(uni, monkeypatch):
    import json

    from streamlit.testing.v1 import AppTest

    from sae_core.universality.grid import Grid, GridConfig, grid_to_workspace, heat

    ws, _, _ = uni
    g = Grid.open(grid_to_workspace(ws, GridConfig(base=SMALL)).path).results  # built by the test above
    app = APP
    monkeypatch.setenv("SAE_STUDIO_WORKSPACE", str(ws.root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(app, default_timeout=120).run()
    at.switch_page("views/universality.py").run()
    assert not at.exception
    at.selectbox(key="uni_grid_measure").set_value("cka_debiased").run()
    fig = [json.loads(c.proto.spec) for c in at.get("plotly_chart")][-1]
    np.testing.assert_allclose(np.array(fig["data"][0]["z"], dtype=float), heat(g, "cka_debiased"))
    assert fig["data"][0]["x"] == ["0", "1", "2", "3"] and fig["data"][0]["y"] == ["0", "1"]
    b = g["best"]["cka_debiased"]
    assert fig["layout"]["shapes"][0]["x0"] == b["j"] - 0.5 and fig["layout"]["shapes"][0]["y0"] == b["i"] - 0.5
    assert f"p={b['max_null']['p']:.3g}" in fig["layout"]["title"]["text"]
    for show, title in (("p", "p-value (shuffled null) of CKA (debiased)"), ("n_pairs", "matched pairs of CKA")):
        at.segmented_control(key="uni_grid_show").set_value(show).run()
        fig = [json.loads(c.proto.spec) for c in at.get("plotly_chart")][-1]
        np.testing.assert_allclose(np.array(fig["data"][0]["z"], dtype=float), heat(g, "cka_debiased", show))
        assert fig["layout"]["title"]["text"].startswith(title)


@pytest.mark.slow  # builds the whole universality study
def test_the_authors_computation_on_the_same_saes(uni, tiny_a):
    """Paper mode (issue #29) on the fixture's SAEs: pre-activations correlated (checked against
    numpy on the stores), the authors' filters in their order, one-direction SVCCA, their subspace
    procedure on the paper's categories, the mode recorded."""
    from sae_core.activations.paired import open_paired
    from sae_core.sae.io import load_sae
    from sae_core.universality.job import twin_config
    from sae_core.universality.keyword_groups import AUTHORS_GROUPS
    from sae_core.universality.matching import AUTHORS_NONCONCEPT
    from sae_core.universality.method import method_rows

    ws, art, _ = uni
    u = Universality.open(art.path)
    assert u.results["mode"] == "default" and art.meta["mode"] == "default"
    cfg = twin_config(u.config, u.results, "paper")
    assert cfg.mode == "paper" and twin_config(cfg.to_json(), u.results, "default").mode == "default"
    p_art = universality_to_workspace(ws, cfg)
    p = Universality.open(p_art.path)
    r = p.results
    assert (r["mode"], r["codes"], r["subspace_procedure"], p_art.meta["mode"]) == ("paper", "pre_acts", "concepts",
                                                                                    "paper")
    assert [s for s, _ in r["steps"]] == ["many-to-one", "no non-concept top token", "a shared top token",
                                           "one per A feature (first)", "correlation > 0.1"]
    a = [q["a"] for q in r["pairs"]]
    assert len(a) == len(set(a)) == r["unique_a"] == r["n_pairs"] >= 10
    for q in r["pairs"]:
        assert q["corr"] > 0.1 and set(q["top_a"]) & set(q["top_b"])
        assert not (set(q["top_a"]) | set(q["top_b"])) & AUTHORS_NONCONCEPT
    # the correlation is of the dense ReLU pre-activations: numpy on the stores agrees
    pair = open_paired(ws, ws.get("paired", r["paired"]))
    keep = ~np.isin(pair.a.token_ids().numpy(), tiny_a.tokenizer.all_special_ids)
    q = max(r["pairs"], key=lambda x: x["corr"])
    cols = []
    for side, store in (("a", pair.a), ("b", pair.b)):
        sae = load_sae(ws.get("sae", r["saes"][side]).path)
        with torch.no_grad():
            cols.append(torch.relu(sae.pre_acts(store.read_all()))[:, q[side]].numpy()[keep])
    assert np.corrcoef(*cols)[0, 1] == pytest.approx(q["corr"], abs=1e-4)
    assert r["scores"]["svcca"]["used"]["k_x"] == 1 == r["scores"]["svcca"]["used"]["k_y"]
    assert all("p_authors" in s["shuffled"] for s in r["scores"].values())
    sub = r["subspaces"]
    assert set(sub) == set(AUTHORS_GROUPS)
    assert sub["Countries"]["in_vocabulary"] == [] == sub["Biology"]["in_vocabulary"]
    months = sub["MonthNames"]
    assert months["features_a"] >= 3 and months["features_b"] >= 3 and months["n_pairs"] >= 1
    assert len({a for a, _ in months.get("pairs", [])}) == months["n_pairs"]  # one pair per A feature
    rows = {row["step"]: row["this result"] for row in method_rows(p.config, r)}
    assert rows["mode"] == "paper" and rows["activations correlated"].startswith("the SAEs' dense ReLU pre-act")
    assert "Countries" in rows["keyword groups"].split("no word in this vocabulary:")[1]


@pytest.mark.slow  # builds the whole universality study
def test_steering_a_pair_on_the_page_and_from_the_cli(uni, monkeypatch):
    """Issue #32, part 4: the page's pair-steering figures and the CLI's JSON are the library's."""
    import json

    from streamlit.testing.v1 import AppTest
    from typer.testing import CliRunner

    from sae_core.cli import app as cli
    from sae_core.universality.pair_steering import steer_result_pair

    from sae_core.universality import pair_steering

    ws, art, _ = uni
    monkeypatch.setattr(pair_steering, "N_TEXTS", 8)  # fewer shared prompts, for the page (AppTest runs here) too
    u = Universality.open(art.path)
    pairs = u.results["pairs"]
    pick = max(range(len(pairs)), key=lambda i: min(pairs[i]["fires_a"], pairs[i]["fires_b"]))  # fires on 8 texts
    want = steer_result_pair(ws, u, pick, fraction=2.0, runs=30)
    monkeypatch.setenv("SAE_STUDIO_WORKSPACE", str(ws.root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("views/universality.py").run()
    at.selectbox(key="uni").set_value(art.name).run()
    at.selectbox(key="uni_pair").set_value(pick).run()
    at.toggle(key="uni_steer").set_value(True).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["effect similarity"] == f"{want.similarity:.3f}" and metrics["p-value"] == f"{want.p:.3g}"
    assert metrics["random pairs"] == f"{sum(want.null) / len(want.null):.3f}"
    spec = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "random pairs" in c.proto.spec
                and "Steering both models" in c.proto.spec)
    assert sorted(plotly_values(spec["data"][0]["x"])) == pytest.approx(sorted(want.null))
    r = CliRunner().invoke(cli, ["steer-pair", "--result", art.name, "--pair", str(pick), "--runs", "5", "--json",
                                 "--workspace", str(ws.root)])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["similarity"] == pytest.approx(want.similarity) and len(got["null"]) == 5 and got["pair"] == pick
    r = CliRunner().invoke(cli, ["steer-pair", "--result", art.name, "--pair", "100000", "--workspace", str(ws.root)])
    assert r.exit_code == 2 and "pair 100000 does not exist" in r.output
