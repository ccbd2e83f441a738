"""Paired harvests (rows keyed by document and position, checked equal across models) and mappers
trained from them: streamed ridge equals the closed form in memory, an interrupted streamed run
resumes to the same weights, and stores that are not the same rows are refused."""
import pytest
import torch

from sae_core.activations.paired import KIND, PairedStores, open_paired, paired_to_workspace
from sae_core.errors import ArtifactError
from sae_core.models.loading import load_model, to_tokens
from sae_core.models.texts import TextSource, texts_for_tokens
from sae_core.steering.mapper_training import train_mapper_streaming
from sae_core.steering.mappers import MapperConfig
from sae_core.workspace import Workspace

A, B = ("zoo:tiny-a-backdoor", "blocks.0.hook_resid_post"), ("zoo:tiny-b-backdoor", "blocks.1.hook_resid_post")


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("paired") / "ws")
    art = paired_to_workspace(ws, A, B, n_tokens=3000)
    return ws, art, open_paired(ws, art)


def test_rows_are_the_same_document_and_position_in_both_models(paired):
    ws, art, pair = paired
    assert pair.a.n_tokens == pair.b.n_tokens >= 3000 and (pair.a.d, pair.b.d) == (128, 256)
    assert [i["model"] for i in art.inputs] == [A[0], B[0]] and ws.list(KIND, uses=A[0]) == [art]
    doc, pos = pair.a.row_keys()
    model_a, model_b = load_model(A[0]), load_model(B[0])
    texts = texts_for_tokens(model_a.tokenizer, 3000, TextSource().documents(0), 64, True)
    xa, xb = pair.a.read_all(), pair.b.read_all()
    for r in (0, 17, len(doc) // 2, len(doc) - 1):  # recompute each row from its key
        ids = to_tokens(model_a, texts[int(doc[r])])[:, :64]
        with torch.no_grad():
            _, cache_a = model_a.run_with_cache(ids, names_filter=[A[1]])
            _, cache_b = model_b.run_with_cache(ids, names_filter=[B[1]])
        assert torch.allclose(xa[r], cache_a[A[1]][0, int(pos[r])], atol=1e-5)
        assert torch.allclose(xb[r], cache_b[B[1]][0, int(pos[r])], atol=1e-5)
    assert paired_to_workspace(ws, A, B, n_tokens=3000).name == art.name  # idempotent


def test_stores_of_other_rows_are_refused(paired, tmp_path):
    import shutil

    from sae_core.activations.store import shard_path, write_shard
    from sae_core.activations.user_file import import_activation_file

    _, _, pair = paired
    moved = tmp_path / "moved"
    shutil.copytree(pair.b.path, moved)
    acts, tokens = pair.b.read_shard(0)
    doc, pos = pair.b.row_keys()
    n0 = pair.b.shard_rows[0]
    d2 = doc[:n0].clone()
    d2[5] += 1
    write_shard(moved, 0, acts, tokens, d2, pos[:n0])
    assert shard_path(moved, 0).exists()
    with pytest.raises(ArtifactError, match="disagree on the document of row 5"):
        PairedStores.open(pair.a.path, moved)
    import numpy as np
    f = tmp_path / "x.npy"
    np.save(f, np.zeros((pair.a.n_tokens, 4), dtype=np.float32))
    import_activation_file(f, tmp_path / "imported", shard_tokens=pair.a.meta.shard_tokens)
    with pytest.raises(ArtifactError, match="no 'doc' column"):
        PairedStores.open(pair.a.path, tmp_path / "imported")


def test_streamed_ridge_equals_the_closed_form_in_memory(paired):
    _, _, pair = paired
    m = train_mapper_streaming(pair, MapperConfig(kind="ridge"))
    n_val = max(1, int(0.1 * pair.n_tokens))
    X, Y = pair.a.read_all()[:-n_val].double(), pair.b.read_all()[:-n_val].double()
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    gram = Xc.T @ Xc
    W = torch.linalg.solve(gram + 1e-3 * gram.diagonal().mean() * torch.eye(gram.shape[0]), Xc.T @ Yc)
    assert torch.allclose(m.lin.weight.double(), W.T, atol=1e-4)
    assert torch.allclose(m.lin.bias.double(), Y.mean(0) - X.mean(0) @ W, atol=1e-3)
    assert m.history[0]["val_fvu"] < 0.5


def test_an_interrupted_streamed_run_resumes_to_the_same_mapper(paired, tmp_path):
    _, _, pair = paired
    cfg = MapperConfig(lr=1e-3, epochs=2, batch_size=32, checkpoint_every=20, patience=5)
    whole = train_mapper_streaming(pair, cfg, ckpt_dir=tmp_path / "whole")
    assert not (tmp_path / "whole").exists()  # removed once trained

    class Stop(Exception):
        pass

    def stop_at_first_report(done, total, text):
        raise Stop
    with pytest.raises(Stop):
        train_mapper_streaming(pair, cfg, ckpt_dir=tmp_path / "cut", on_progress=stop_at_first_report)
    assert (tmp_path / "cut" / "meta.json").exists()
    resumed = train_mapper_streaming(pair, cfg, ckpt_dir=tmp_path / "cut")
    for (k, v), (_, w) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(v, w), k
    assert whole.history == resumed.history and len(whole.history) == 2
    assert whole.history[-1]["val_fvu"] < 0.6
    other = MapperConfig(lr=1e-3, epochs=3, batch_size=32, checkpoint_every=20)
    with pytest.raises(Stop):
        train_mapper_streaming(pair, cfg, ckpt_dir=tmp_path / "cut2", on_progress=stop_at_first_report)
    with pytest.raises(ArtifactError, match="checkpoint of another mapper run"):
        train_mapper_streaming(pair, other, ckpt_dir=tmp_path / "cut2")
