"""The Features page's "Steer with this feature" and "What drives this feature" panels through AppTest
(issue #32): the columns the library generates, by name and text, the shading read before the edits, bad
strengths as errors that keep what was typed, and the library's driving components."""
from __future__ import annotations

import html

from sae_app.feature_drivers import N_PROMPTS, N_SHOWN
from sae_core.circuits.drivers import feature_drivers
from sae_core.features.index import FeatureIndex
from sae_core.sae.io import load_sae
from sae_core.steering.feature_edits import FeatureEdit, steer_columns
from sae_core.steering.interventions import Positions
from sae_app.feature_steering import default_prompt, default_values, parse_values
from tests.helpers import app_test, features_page, page_errors

HOOK = "blocks.1.hook_resid_post"


def _gens(at) -> list[str]:
    return [el.proto.body for el in at.get("html") if 'class="gen"' in el.proto.body]


def _text(body: str) -> str:
    """The tokens of a generation's html, joined as shown (word-level: spaces between)."""
    import re

    return " ".join(html.unescape(t) for t in re.findall(r'<span class="tok"[^>]*>([^<]*)</span>', body))


def _open_live_feature(indexed, workspace):
    """The Features page on the index's most active feature: ``(at, view, the SAE's artifact)``."""
    _, sae_art = indexed
    [art] = workspace.list("feature_index")
    index = FeatureIndex.open(art.path)
    feature = int(index.column("count").argmax())
    at = features_page(app_test().run())
    at.number_input(key="fb_feature").set_value(feature).run()
    assert not page_errors(at), page_errors(at)
    return at, index.feature(feature), sae_art


def test_steer_panel_and_what_drives_the_feature(indexed, workspace, tiny_a):
    """Steering with the feature shows the library's columns; what drives it, the library's components."""
    at, view, sae_art = _open_live_feature(indexed, workspace)
    feature = view.index
    # it opens on the feature's top context and five strengths from its max activation: six columns
    prompt = default_prompt(view, True, set(tiny_a.tokenizer.all_special_tokens))
    assert prompt and "<|endoftext|>" not in prompt and prompt.endswith(view.top[0].tokens[view.top[0].peak].strip())
    assert at.text_input(key=f"fb_steer_prompt_{feature}").value == prompt
    values = parse_values(default_values("add", view.max_act))
    assert at.text_input(key=f"fb_steer_values_add_{feature}").value == default_values("add", view.max_act)
    sae = load_sae(sae_art.path)
    cols = {f"#{feature} α={v:g}": (FeatureEdit(feature, "add", v),) for v in values}
    ref, _ = steer_columns(tiny_a, sae, HOOK, prompt, {"plain": ()} | cols, watch=feature, n_tokens=20)
    gens = _gens(at)
    assert len(gens) == 6 and [c.label for c in ref] == ["plain"] + list(cols)
    labels = [m.value for m in at.markdown if m.value.startswith("**plain") or m.value.startswith(f"**#{feature}")]
    assert labels == [f"**{c.label}**" for c in ref]
    for body, col in zip(gens, ref):
        assert _text(body) == " ".join(col.tokens)
        assert f"{col.acts[col.n_prompt - 1]:.4g}" in html.unescape(body)  # hover: the activation at the prompt end
    assert len({c.text for c in ref}) > 1  # the strengths change the generations
    assert any(f"Shading: feature {feature}'s activation before the edits" in c.value for c in at.caption)

    # clamp mode, a strength that is not a number: an error naming it, and the text kept
    at.radio(key="fb_steer_mode").set_value("clamp").run()
    assert at.text_input(key=f"fb_steer_values_clamp_{feature}").value == default_values("clamp", view.max_act)
    at.text_input(key=f"fb_steer_values_clamp_{feature}").input("0, 5, lots").run()
    assert "'lots' is not a number" in " ".join(page_errors(at))
    assert at.text_input(key=f"fb_steer_values_clamp_{feature}").value == "0, 5, lots" and not _gens(at)
    at.text_input(key=f"fb_steer_values_clamp_{feature}").input("0, nan").run()
    assert "'nan' is not a finite number" in " ".join(page_errors(at))
    at.text_input(key=f"fb_steer_values_clamp_{feature}").input("0, 5").run()
    at.text_input(key="fb_steer_extra").input("3, 999").run()
    assert "'999' is not a feature of this SAE: give numbers from 0 to 63" in " ".join(page_errors(at))
    at.text_input(key="fb_steer_extra").input("3").run()
    assert not page_errors(at)
    ref, _ = steer_columns(tiny_a, sae, HOOK, prompt, {
        "plain": (), **{f"#{feature} = {v:g} + #3 = {v:g}": (FeatureEdit(feature, "clamp", v), FeatureEdit(3, "clamp", v))
                        for v in (0.0, 5.0)}}, watch=feature, positions=Positions("all"), n_tokens=20)
    assert [_text(b) for b in _gens(at)] == [" ".join(c.tokens) for c in ref]

    # what drives it (a toggle, off until asked: nothing is attributed before)
    assert all("What drives" not in c.proto.spec for c in at.get("plotly_chart"))
    at.toggle(key="fb_drivers").set_value(True).run()
    assert not at.exception and not page_errors(at), page_errors(at)
    specials = set(tiny_a.tokenizer.all_special_tokens)
    prompts = [p for ex in view.top[:N_PROMPTS] if (p := ex.prompt(True, specials))]
    d = feature_drivers(tiny_a, load_sae(sae_art.path), HOOK, feature, prompts)
    df = next(x.value for x in at.dataframe if "exact ablation" in x.value.columns)
    assert list(df["component"]) == [c.node for c in d.components[:N_SHOWN]]
    assert df["attribution"].tolist() == [c.attribution for c in d.components[:N_SHOWN]]
    assert any(f"Spearman rho {d.spearman:.2f}" in c.value for c in at.caption)
    assert any(f"What drives feature {feature}" in c.proto.spec for c in at.get("plotly_chart"))
    assert any("No circuits study of zoo:tiny-a in this workspace" in c.value for c in at.caption)
    assert len([h for h in at.get("html") if 'class="ctx"' in h.proto.body and "+" in h.proto.body]) >= 1
