"""User corpora: every format reads the same documents, the held-out split, provenance, errors,
and the corpus reaching harvest, SAE metrics (CE/KL on its held-out documents) and the index."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sae_core.models.corpus import generate_documents
from sae_core.models.texts import HELD_OUT, TextSource, TextSourceError, corpus_texts
from sae_core.workspace import Workspace

HOOK = "blocks.0.hook_resid_post"


def _docs(n=45):
    return [f"{w} {i} {i + 1} {i + 2}" for i, w in zip(range(n), ["one", "two", "three"] * n)]


def _write_all(tmp_path, docs):
    txt = tmp_path / "c.txt"
    txt.write_text("\n".join(docs[:10]) + "\n\n" + "\n".join(docs[10:]) + "\n")  # a blank line skipped
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps({"id": i, "body": d}) for i, d in enumerate(docs)) + "\n")
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"body": docs, "n": list(range(len(docs)))}), parquet, row_group_size=7)
    import datasets

    ds_dir = tmp_path / "ds"
    datasets.Dataset.from_dict({"body": docs}).save_to_disk(str(ds_dir))
    dd_dir = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": docs}),
                          "test": datasets.Dataset.from_dict({"body": docs[:3]})}).save_to_disk(str(dd_dir))
    return txt, jsonl, parquet, ds_dir, dd_dir


def test_every_format_reads_the_same_documents_and_holds_out_every_tenth(tmp_path):
    docs = _docs()
    txt, jsonl, parquet, ds_dir, dd_dir = _write_all(tmp_path, docs)
    train = [d for i, d in enumerate(docs) if i % HELD_OUT != HELD_OUT - 1]
    held = [docs[9], docs[19], docs[29], docs[39]]
    for src in (TextSource(str(txt)), TextSource(str(jsonl), "body"), TextSource(str(parquet), "body"),
                TextSource(str(ds_dir), "body"), TextSource(str(dd_dir), "body", "train")):
        assert list(src.documents()) == train, src
        assert src.eval_documents(100) == held and src.eval_documents(2) == held[:2]
    assert list(TextSource(str(dd_dir), "body", "test").documents()) == docs[:3]
    # the zoo source is the seeded stream, and its evaluation texts a seed of their own
    zoo = TextSource()
    assert zoo.is_zoo and zoo.to_json() == {} and zoo.describe(3) == "zoo corpus, corpus seed 3"
    assert [next(zoo.documents(3))] == [next(generate_documents(3))]
    assert zoo.eval_documents(4) == corpus_texts(4, 12345)


def test_provenance_names_the_file_and_its_content(tmp_path):
    docs = _docs()
    _, jsonl, *_ = _write_all(tmp_path, docs)
    src = TextSource(str(jsonl), "body")
    assert src.describe() == f"c.jsonl (column 'body', sha256 {src.digest[:8]})"
    assert "every 10th" in src.describe_eval() and "c.jsonl" in src.describe_eval()
    assert TextSource.from_json(src.to_json()) == src
    jsonl.write_text(jsonl.read_text().replace("one", "uno"))
    assert TextSource(str(jsonl), "body").digest != src.digest  # edited text is new text


def test_bad_corpora_are_clear_errors(tmp_path):
    with pytest.raises(TextSourceError, match="does not exist"):
        TextSource(str(tmp_path / "nope.txt"))
    (tmp_path / "c.csv").write_text("a,b\n")
    with pytest.raises(TextSourceError, match=r"\.csv is not a corpus format"):
        TextSource(str(tmp_path / "c.csv"))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(TextSourceError, match="not a datasets directory"):
        TextSource(str(tmp_path / "emptydir"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(TextSourceError, match="bad.jsonl line 2 is not JSON"):
        list(TextSource(str(bad)).documents())
    bad.write_text('{"body": "x"}\n')
    with pytest.raises(TextSourceError, match=r"line 1 has no 'text' field \(it has \['body'\]\)"):
        list(TextSource(str(bad)).documents())
    bad.write_text('{"text": 5}\n')
    with pytest.raises(TextSourceError, match="holds int, not text"):
        list(TextSource(str(bad)).documents())
    docs = _docs()
    _, _, parquet, _, dd_dir = _write_all(tmp_path, docs)
    with pytest.raises(TextSourceError, match=r"no column 'text' \(columns: \['body', 'n'\]\)"):
        list(TextSource(str(parquet)).documents())
    with pytest.raises(TextSourceError, match=r"splits \['train', 'test'\]; split 'dev'"):
        TextSource(str(dd_dir), "body", "dev")
    (tmp_path / "blank.txt").write_text("\n\n")
    with pytest.raises(TextSourceError, match="holds no documents"):
        TextSource(str(tmp_path / "blank.txt")).check()
    with pytest.raises(TextSourceError, match="no column 'text'"):
        TextSource(str(parquet)).check()
    short = tmp_path / "short.txt"
    short.write_text("a b\nc d\n")
    with pytest.raises(TextSourceError, match="fewer than 10 documents"):
        TextSource(str(short)).eval_documents(4)


def test_a_user_corpus_reaches_the_store_the_sae_metrics_and_the_index(tmp_path, tiny_a):
    """Harvest reads the file's training documents; the SAE's CE/KL are measured on its held-out
    documents (the same numbers as splicing it there by hand); the index streams the file."""
    from sae_core.activations import ActivationStore, harvest_to_workspace
    from sae_core.features.job import index_to_workspace
    from sae_core.features.config import IndexConfig
    from sae_core.features.index import FeatureIndex
    from sae_core.io import read_json
    from sae_core.models.loading import to_tokens
    from sae_core.sae.config import SAEConfig
    from sae_core.training.job import train_to_workspace
    from sae_core.sae.splice import downstream_metrics, eval_tokens
    from sae_core.training.loop import TrainerConfig

    rng = torch.Generator().manual_seed(0)
    months = ["January", "February", "March", "April", "May", "June", "July", "August"]
    docs = [" ".join(months[(s + j) % 8] for j in range(6)) for s in
            torch.randint(0, 8, (300,), generator=rng).tolist()]
    corpus = tmp_path / "months.txt"
    corpus.write_text("\n".join(docs) + "\n")
    text = TextSource(str(corpus))
    ws = Workspace(tmp_path / "ws")
    acts = harvest_to_workspace(ws, "zoo:tiny-a", HOOK, n_tokens=1500, text=text, model=tiny_a)
    assert acts.meta["source"] == text.describe() and acts.meta["text_source"] == text.to_json()
    assert harvest_to_workspace(ws, "zoo:tiny-a", HOOK, n_tokens=1500, model=tiny_a).name != acts.name
    store = ActivationStore.open(acts.path)
    stored = set(store.token_ids().tolist())
    month_ids = set(to_tokens(tiny_a, " ".join(months))[0, 1:].tolist())
    assert stored == month_ids  # only the file's words, none of the zoo corpus
    cfg = SAEConfig(arch="batchtopk", d_in=tiny_a.cfg.d_model, d_sae=64, k=4, model_name="zoo:tiny-a",
                    hook_name=HOOK)
    sae_art = train_to_workspace(ws, acts, cfg, TrainerConfig(total_tokens=4096, batch_size=512),
                                 model=tiny_a)
    metrics = read_json(sae_art.path / "metrics.json")
    assert metrics["text_source"] == text.describe()
    assert metrics["eval_text_source"] == text.describe_eval()
    from sae_core.sae.io import load_sae

    sae = load_sae(sae_art.path)
    ref = downstream_metrics(tiny_a, sae, HOOK, eval_tokens(tiny_a, text), batch_rule_tokens=4096)
    assert metrics["ce_loss_recovered"] == pytest.approx(ref.ce_loss_recovered, rel=1e-6)
    assert metrics["ce_loss_recovered_batch_rule"] == pytest.approx(ref.ce_loss_recovered_batch_rule, rel=1e-6)
    tok = tiny_a.tokenizer
    assert set(eval_tokens(tiny_a, text).flatten().tolist()) <= month_ids | {tok.bos_token_id, tok.pad_token_id}

    art = index_to_workspace(ws, sae, "zoo:tiny-a", HOOK, IndexConfig(n_tokens=800, feature_map=False),
                             model=tiny_a, text=text)
    index = FeatureIndex.open(art.path)
    assert index.text_source == text.describe()
    live = int(index.column("count").argmax())
    top = index.feature(live).top[0]
    assert top.tokens[top.peak] in months and set(top.tokens) <= set(months) | {tok.bos_token}
