"""Token contexts as HTML: each token's background shows the feature's activation on it.

Colour intensity is activation / scale (the feature's maximum over the index), so contexts of one
feature are comparable; hovering a token shows its exact value. Tokens are HTML-escaped, and
whitespace is made visible where a token is nothing but whitespace.
"""
from __future__ import annotations

import html

ACCENT = (255, 122, 0)  # orange, readable on light and dark themes


def _token_span(token: str, act: float, scale: float, peak: bool) -> str:
    alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, act / scale))
    shown = html.escape(token) if token.strip() else html.escape(repr(token)[1:-1]) or "&nbsp;"
    style = f"background: rgba({ACCENT[0]},{ACCENT[1]},{ACCENT[2]},{alpha:.3f}); padding: 1px 2px; border-radius: 3px;"
    if peak:
        style += " outline: 1.5px solid rgb(200,80,0);"
    title = html.escape(f"{token!r}: {act:.4g}")
    return f'<span class="tok" style="{style}" title="{title}">{shown}</span>'


def tokens_html(tokens: list[str], acts: list[float], scale: float, peak: int | None = None) -> str:
    """One line of highlighted tokens (``peak`` outlined)."""
    spans = " ".join(_token_span(t, a, scale, i == peak) for i, (t, a) in enumerate(zip(tokens, acts)))
    return f'<div class="ctx" style="line-height: 1.9; font-family: monospace; font-size: 0.9em;">{spans}</div>'


def examples_html(examples, scale: float) -> str:
    """A block of examples (``index.Example``), each with its peak value in front."""
    rows = [f'<div style="display:flex; gap: 0.6em; align-items: baseline;">'
            f'<code style="min-width: 4.5em; text-align: right;">{e.value:.3g}</code>'
            f'{tokens_html(e.tokens, e.acts, scale, e.peak)}</div>' for e in examples]
    return "\n".join(rows) or "<em>no examples</em>"


FIRED = (31, 119, 180)  # blue: where an intervention changed the activations


def fired_html(tokens: list[str], fired: list[float], n_prompt: int, scale: float) -> str:
    """A generation with the tokens an intervention fired on shaded (hover: the norm it changed);
    the continuation is bold."""
    spans = []
    for i, (t, f) in enumerate(zip(tokens, fired)):
        alpha = 0.0 if scale <= 0 or f <= 0 else 0.15 + 0.45 * min(1.0, f / scale)  # text stays legible
        shown = html.escape(t) if t.strip() else "&nbsp;"
        weight = "font-weight: 600;" if i >= n_prompt else "color: #666;"
        title = html.escape(f"{t!r}: intervention norm {f:.3g}" if f > 0 else f"{t!r}")
        spans.append(f'<span class="tok" style="background: rgba({FIRED[0]},{FIRED[1]},{FIRED[2]},'
                     f'{alpha:.3f}); padding: 1px 2px; border-radius: 3px; {weight}" title="{title}">{shown}</span>')
    return f'<div class="gen" style="line-height: 1.9; font-family: monospace; font-size: 0.9em;">{" ".join(spans)}</div>'
