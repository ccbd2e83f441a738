"""Task words on a byte-level BPE tokenizer (issue #31). Members the tokenizer splits are left out
and listed, as the authors' filter keeps single-token numerals and words; a template word it splits
is a clear error naming the word and its pieces."""
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from sae_core.circuits.heads import member_positions, ov_scores
from sae_core.circuits.tasks import CircuitError, TaskConfig, excluded_line, make_task
from sae_core.models.corpus import SEQUENCE_TASKS


def _bpe_of(words: list[str]) -> PreTrainedTokenizerFast:
    """A small byte-level BPE trained on ``words`` only: each is one token after a space, any other
    word falls apart into pieces (as rare words do in GPT-2's or Llama's)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" " + " ".join(words)] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def test_a_template_word_split_by_the_tokenizer_is_named_with_its_pieces():
    tok = _bpe_of(SEQUENCE_TASKS["number_words"][0] + ["in"])
    pieces = [tok.decode([i]) for i in tok.encode(" done", add_special_tokens=False)]
    assert len(pieces) > 1 and len(tok.encode(" in", add_special_tokens=False)) == 1

    class Model:   # make_task checks the template's words before it builds or runs anything
        tokenizer = tok
    with pytest.raises(CircuitError) as err:
        make_task(Model(), TaskConfig(task="number_words", template="sentence"))
    msg = str(err.value)
    assert msg.startswith(f"'done' is not one token of this tokenizer but {len(pieces)} tokens ")
    assert " + ".join(map(repr, pieces)) in msg and "'in'" not in msg


def test_split_members_are_left_out_and_listed(tiny_l):
    """zoo:tiny-l's tokenizer holds " 1" to " 8" as one token each and splits " 0", " 9", " 10"...:
    the digits task runs on the kept members, and says which it left out with their pieces."""
    tok = tiny_l.tokenizer
    task = make_task(tiny_l, TaskConfig(task="digits", template="bare", n_prompts=24))
    kept = [str(i) for i in range(1, 9)]
    assert task.members == kept
    assert set(task.stats.excluded) == set(SEQUENCE_TASKS["digits"][0]) - set(kept)
    pieces = [tok.decode([i]) for i in tok.encode(" 10", add_special_tokens=False)]
    assert task.stats.excluded["10"] == f"{len(pieces)} tokens " + " + ".join(map(repr, pieces))
    assert task.stats.to_json()["excluded"]["0"].startswith("2 tokens ")
    ids = {tok.encode(" " + m, add_special_tokens=False)[0] for m in kept}
    assert set(task.answer_B.tolist()) <= ids and set(task.distractor_B.tolist()) <= ids
    for text in task.texts + task.corrupt_texts:
        assert text.startswith(" ") and set(text.split()) <= set(kept)    # the first member is ' 1', not '1'
    assert len(member_positions(tiny_l, task)) == task.cfg.shown
    assert len(task) >= 20 and (task.clean_BT != task.corrupt_BT).any()
    assert "'0' (' ' + '0'), '9' (' ' + '9')" in excluded_line(task.stats.excluded) and "and 86 more" in \
        excluded_line(task.stats.excluded)
    assert {s.head for s in ov_scores(tiny_l, "digits")} == {f"a{l}.h{h}" for l in range(4) for h in range(8)}


def test_subjects_keep_one_token_length(tiny_l):
    """Few nouns are one token of zoo:tiny-l's tokenizer: the sentence template draws them from one
    token length, so that every prompt keeps its positions, and says so."""
    task = make_task(tiny_l, TaskConfig(task="days", n_prompts=16))
    assert "nouns of 2 tokens each" in task.subjects
    assert len({len(t) for t in task.texts}) > 1 and task.clean_BT.shape == task.corrupt_BT.shape
    assert not (task.clean_BT == tiny_l.tokenizer.pad_token_id).any() or \
        tiny_l.tokenizer.pad_token_id == tiny_l.tokenizer.bos_token_id


def test_no_run_of_single_token_members_is_a_clear_error(tiny_l):
    with pytest.raises(CircuitError) as err:
        make_task(tiny_l, TaskConfig(task="months", template="bare"))
    msg = str(err.value)
    assert msg.startswith("months: no 5 consecutive members are single tokens of this tokenizer")
    assert "one token: March, April, May, November, December" in msg and "'January' (' J' + 'anuary')" in msg
    assert msg.count("January") == 1 and len(msg) < 500
    with pytest.raises(CircuitError, match=r"starts \[0\]: a run of 5 digits from there has a member that is not one"):
        make_task(tiny_l, TaskConfig(task="digits", template="bare", starts=(0, 1)))
    assert torch.equal(make_task(tiny_l, TaskConfig(task="digits", template="bare", starts=(2,), n_prompts=4)).answer_B,
                       torch.tensor(tiny_l.tokenizer.encode(" 6", add_special_tokens=False) * 4))
