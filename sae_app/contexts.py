"""Token contexts as HTML: each token's background shows the feature's activation on it.

Colour intensity is activation / scale (the feature's maximum over the index), so contexts of one
feature are comparable; hovering a token shows its exact value. Tokens are HTML-escaped, and
whitespace is made visible where a token is nothing but whitespace.

``spaced``: word-level tokens (the zoo's) are shown with a space between them; byte-level tokens
carry their own leading spaces (``sae_core.models.tokens``), so they are joined as they are, with
whitespace kept (a highlighted token shows its leading space), and an empty piece (the first
bytes of a character that a later token completes) is an empty span.
"""
from __future__ import annotations

import html

ACCENT = (255, 122, 0)  # orange, readable on light and dark themes


def _token_span(token: str, act: float, scale: float, peak: bool) -> str:
    alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, act / scale))
    if not token:
        shown = ""  # part of a character shown whole on a later token
    elif token.strip(" "):
        shown = html.escape(token)  # its spaces (if any) are kept by the line's white-space rule
    else:
        shown = html.escape(repr(token)[1:-1]) if token.strip() else "&nbsp;" * len(token)
    pad = "1px 2px" if token else "0"
    style = f"background: rgba({ACCENT[0]},{ACCENT[1]},{ACCENT[2]},{alpha:.3f}); padding: {pad}; border-radius: 3px;"
    if peak:
        style += " outline: 1.5px solid rgb(200,80,0);"
    title = html.escape(f"{token!r}: {act:.4g}")
    return f'<span class="tok" style="{style}" title="{title}">{shown}</span>'


def _line(spans: list[str], spaced: bool, cls: str = "ctx") -> str:
    """Token spans as one block: spaces between word-level tokens, byte-level ones joined as they are."""
    pre = "" if spaced else " white-space: pre-wrap;"
    return (f'<div class="{cls}" style="line-height: 1.9; font-family: monospace; font-size: 0.9em;{pre}">'
            f'{(" " if spaced else "").join(spans)}</div>')


def tokens_html(tokens: list[str], acts: list[float], scale: float, peak: int | None = None,
                spaced: bool = True) -> str:
    """One line of highlighted tokens (``peak`` outlined); ``spaced``: module doc."""
    return _line([_token_span(t, a, scale, i == peak) for i, (t, a) in enumerate(zip(tokens, acts))], spaced)


def examples_html(examples, scale: float, spaced: bool = True) -> str:
    """A block of examples (``index.Example``), each with its peak value in front."""
    rows = [f'<div style="display:flex; gap: 0.6em; align-items: baseline;">'
            f'<code style="min-width: 4.5em; text-align: right;">{e.value:.3g}</code>'
            f'{tokens_html(e.tokens, e.acts, scale, e.peak, spaced)}</div>' for e in examples]
    return "\n".join(rows) or "<em>no examples</em>"


FIRED = (31, 119, 180)  # blue: where an intervention changed the activations


def fired_html(tokens: list[str], fired: list[float], n_prompt: int, scale: float, spaced: bool = True) -> str:
    """A generation with the tokens an intervention fired on shaded (hover: the norm it changed);
    the continuation is bold. ``spaced``: as ``tokens_html``."""
    spans = []
    for i, (t, f) in enumerate(zip(tokens, fired)):
        alpha = 0.0 if scale <= 0 or f <= 0 else 0.15 + 0.45 * min(1.0, f / scale)  # text stays legible
        shown = html.escape(t) if t.strip() else ("&nbsp;" if t else "")
        weight = "font-weight: 600;" if i >= n_prompt else "color: #666;"
        title = html.escape(f"{t!r}: intervention norm {f:.3g}" if f > 0 else f"{t!r}")
        spans.append(f'<span class="tok" style="background: rgba({FIRED[0]},{FIRED[1]},{FIRED[2]},'
                     f'{alpha:.3f}); padding: {"1px 2px" if t else "0"}; border-radius: 3px; {weight}" '
                     f'title="{title}">{shown}</span>')
    return _line(spans, spaced, "gen")


def steered_html(tokens: list[str], acts: list[float], edited: list[bool], n_prompt: int, scale: float,
                 spaced: bool = True) -> str:
    """A generation shaded by a feature's activation (as ``tokens_html``), the tokens an edit changed
    underlined in blue, the continuation bold. ``spaced``: as ``tokens_html``."""
    spans = []
    for i, (t, a, e) in enumerate(zip(tokens, acts, edited)):
        span = _token_span(t, a, scale, False)
        style = ("font-weight: 600;" if i >= n_prompt else "color: #666;") + \
            (f" border-bottom: 2px solid rgb({FIRED[0]},{FIRED[1]},{FIRED[2]});" if e else "")
        spans.append(span.replace('style="', f'style="{style} ', 1))
    return _line(spans, spaced, "gen")


NEGATIVE = (31, 119, 180)  # blue: a token that lowers what is measured


def signed_html(tokens: list[str], values: list[float], scale: float, spaced: bool = True) -> str:
    """Tokens shaded by a signed value: orange where it is positive, blue where negative (hover: the value)."""
    spans = []
    for t, v in zip(tokens, values):
        rgb = ACCENT if v >= 0 else NEGATIVE
        alpha = 0.0 if scale <= 0 else min(1.0, abs(v) / scale)
        shown = html.escape(t) if t.strip() else ("&nbsp;" if t else "")
        spans.append(f'<span class="tok" style="background: rgba({rgb[0]},{rgb[1]},{rgb[2]},{alpha:.3f}); '
                     f'padding: {"1px 2px" if t else "0"}; border-radius: 3px;" '
                     f'title="{html.escape(f"{t!r}: {v:+.4g}")}">{shown}</span>')
    return _line(spans, spaced)
