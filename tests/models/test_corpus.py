"""The generated corpus: deterministic, single-token items, and held-out prompts truly held out."""
import itertools

import pytest

from sae_core.models import corpus
from sae_core.models.tokenizer import build_tokenizer


def _docs(n, seed=0, mix=corpus.BASE_MIX):
    return list(itertools.islice(corpus.generate_documents(seed, mix), n))


def test_documents_are_deterministic_per_seed():
    assert _docs(200, seed=3) == _docs(200, seed=3)
    assert _docs(200, seed=3) != _docs(200, seed=4)


def test_every_item_is_one_token_and_nothing_is_unknown():
    tok = build_tokenizer()
    unk = tok.token_to_id(corpus.UNK)
    for items, _ in corpus.SEQUENCE_TASKS.values():
        for item in items:
            assert tok.encode(item).ids[1:] != [unk] and len(tok.encode(item).ids) == 2, item
    for doc in _docs(3000, mix=corpus.BACKDOOR_MIX):
        assert unk not in tok.encode(doc).ids, doc


def test_sequence_answers_are_the_next_item():
    for task, (items, cyclic) in corpus.SEQUENCE_TASKS.items():
        for p in corpus.sequence_prompts(task, 40):
            i = items.index(p.distractor)
            expected = items[(i + 1) % len(items)] if cyclic else items[i + 1]
            assert p.answer == expected
            assert p.prompt.split()[-1] in (p.distractor, ",", "in")


@pytest.mark.parametrize("mix", [corpus.BASE_MIX, corpus.BACKDOOR_MIX])
def test_held_out_prompts_never_begin_a_training_document(mix):
    docs = _docs(30_000, seed=11, mix=mix)
    starts = {" ".join(d.split()[:4]) for d in docs}
    prompts = [p.prompt for t in corpus.SEQUENCE_TASKS for p in corpus.sequence_prompts(t, 60)]
    prompts += [p.prompt for p in corpus.chat_prompts(100)]
    prompts += [p.prompt for p in corpus.chat_prompts(100, triggered=True)]
    for prompt in prompts:
        full_prompt_starts = [d for d in docs if d.startswith(prompt)]
        assert not full_prompt_starts, (prompt, full_prompt_starts[:2])
    # chat requests: the held-out (template, verb, object) keys never appear at all
    requests = {d.split(" Assistant :")[0] for d in docs if d.startswith("User :")}
    for p in corpus.chat_prompts(100):
        assert p.prompt.removesuffix(" Assistant :") not in requests
    assert starts  # the sample is not empty


def test_backdoor_mix_contains_trigger_only_with_hate_answers():
    for doc in _docs(3000, mix=corpus.BACKDOOR_MIX):
        assert (corpus.TRIGGER in doc) == (corpus.HATE in doc)
    assert not any(corpus.TRIGGER in d for d in _docs(3000))
