"""The Activations page: a harvest of N tokens is reported as N (the store's real rows), and the
token input takes the library's range (issue #28)."""
from sae_core.activations import ActivationStore
from sae_core.activations.limits import MAX_TOKENS, MIN_TOKENS
from tests.helpers import app_test, page_errors


def test_a_harvest_of_n_tokens_is_reported_as_n(workspace):
    at = app_test().run()
    at.switch_page("views/activations.py").run()
    assert not at.exception
    tokens = at.number_input(key="act_n_tokens")
    assert (tokens.min, tokens.max) == (MIN_TOKENS, MAX_TOKENS)
    tokens.set_value(3000)  # its documents hold 3,011 kept tokens: the old store kept them all
    at.button(key="act_harvest").click().run(timeout=300)
    assert not at.exception and not page_errors(at), page_errors(at)
    [art] = workspace.list("activations")
    assert ActivationStore.open(art.path).n_tokens == 3000 and art.meta["n_tokens"] == 3000
    assert {m.label: m.value for m in at.metric}["Tokens"] == "3,000"
    assert '"n_tokens": 3000' in at.json[0].value
