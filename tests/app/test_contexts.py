"""Token contexts as HTML (``sae_app.contexts``): word-level tokens with a space between them,
byte-level pieces joined as they are, so the line reads as the decoded text."""
from __future__ import annotations

import html
import re

import pytest

from sae_app import contexts


def _text(markup: str) -> str:
    """What a browser shows of one line: the spans' text, entities decoded."""
    inner = re.search(r'<div class="(?:ctx|gen)"[^>]*>(.*)</div>', markup, re.S).group(1)
    return html.unescape(re.sub(r"<[^>]+>", "", inner)).replace("\xa0", " ")


@pytest.mark.parametrize("render", [
    lambda toks, spaced: contexts.tokens_html(toks, [0.5] * len(toks), 1.0, 1, spaced),
    lambda toks, spaced: contexts.fired_html(toks, [0.5] * len(toks), 2, 1.0, spaced)])
def test_byte_level_pieces_read_as_the_text_and_word_tokens_get_spaces(render):
    pieces = ["the", " ca", "f", "", "é", " is", " ", "", "", "", "🙂"]
    markup = render(pieces, False)
    assert _text(markup) == "the café is 🙂" and "white-space: pre-wrap" in markup
    assert markup.count('class="tok"') == len(pieces)  # an empty piece keeps its span (hover, peak)
    words = render(["one", "two", "&", "January"], True)
    assert _text(words) == "one two & January" and "white-space" not in words
