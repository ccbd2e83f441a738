"""Task words on a byte-level BPE tokenizer (issue #31): the circuits need every member and template
word to be one token; a word the tokenizer splits is a clear error naming it and its pieces."""
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from sae_core.circuits.tasks import CircuitError, TaskConfig, make_task
from sae_core.models.corpus import SEQUENCE_TASKS


def _bpe_without(word: str) -> PreTrainedTokenizerFast:
    """A small byte-level BPE trained on the number words but ``word``: every other one is a single
    token after a space, ``word`` falls apart into pieces (as rare words do in GPT-2's or Llama's)."""
    words = [w for w in SEQUENCE_TASKS["number_words"][0] if w != word]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" " + " ".join(words)] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def test_a_task_word_split_by_the_tokenizer_is_named_with_its_pieces():
    tok = _bpe_without("twelve")
    pieces = [tok.decode([i]) for i in tok.encode(" twelve", add_special_tokens=False)]
    assert len(pieces) > 1 and len(tok.encode(" eleven", add_special_tokens=False)) == 1

    class Model:   # make_task checks the words before it runs the model
        tokenizer = tok
    with pytest.raises(CircuitError) as err:
        make_task(Model(), TaskConfig(task="number_words", template="bare"))
    msg = str(err.value)
    assert msg.startswith(f"'twelve' is not one token of this tokenizer but {len(pieces)} tokens ")
    assert " + ".join(map(repr, pieces)) in msg and "'eleven'" not in msg
