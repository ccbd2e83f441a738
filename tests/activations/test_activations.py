"""Activations: harvest equals run_with_cache, masking, resume, shuffling reader, user files."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sae_core.activations import (
    ActivationStore, harvest_activations, harvest_hooks, harvest_hooks_to_workspace, harvest_to_workspace,
    import_activation_file, iter_batches, load_activation_file)
from sae_core.models.texts import corpus_texts
from sae_core.errors import ActivationFileError, ArtifactError, HookNotFoundError, SAECoreError
from sae_core.workspace import Workspace
from tests.helpers import REPO, numbered_store

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ZOO_A = REPO / "assets" / "zoo" / "tiny-a"
HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def model():
    if not (ZOO_A / "config.json").exists():
        pytest.skip("zoo:tiny-a is not built (assets/zoo/tiny-a/config.json missing)")
    from sae_core.models.loading import load_model

    return load_model("zoo:tiny-a", device="cpu")


@pytest.fixture(scope="module")
def texts():
    return corpus_texts(24, seed=3)


def _reference(model, hook, texts, context_size=64):
    """Tokens [B, T] and run_with_cache activations [B, T, d] for the same rows."""
    from sae_core.models.loading import to_tokens

    tokens_BT = to_tokens(model, texts)[:, :context_size]
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens_BT, names_filter=lambda n: n == hook)
    return tokens_BT, cache[hook]


# --- harvesting ---------------------------------------------------------------------------------

@pytest.mark.parametrize("hook", [HOOK, "blocks.1.hook_resid_post", "blocks.1.hook_mlp_out"])
def test_harvest_equals_run_with_cache(model, texts, tmp_path, hook):
    store = harvest_activations(model, hook, texts, tmp_path / "s", model_name="zoo:tiny-a",
                                batch_size=7, shard_tokens=200, exclude_special=False)
    tokens_BT, ref_BTD = _reference(model, hook, texts)
    pad, bos = model.tokenizer.pad_token_id, model.tokenizer.bos_token_id
    real_BT = tokens_BT != pad  # the zoo's pad id differs from BOS, so this is the real-token mask
    assert store.n_tokens == int(real_BT.sum()) and store.d == model.cfg.d_model
    torch.testing.assert_close(store.read_all(), ref_BTD[real_BT], rtol=0, atol=1e-6)
    assert torch.equal(store.token_ids(), tokens_BT[real_BT])
    assert int((store.token_ids() == bos).sum()) == len(texts)  # one BOS per row kept
    assert [p.name for p in store.shard_paths()][:2] == ["shard_00000.safetensors", "shard_00001.safetensors"]
    assert store.meta.complete and store.meta.hook == hook and store.meta.model == "zoo:tiny-a"


def test_exclude_special_drops_bos_and_pads(model, texts, tmp_path):
    tok = model.tokenizer
    tokens_BT, ref_BTD = _reference(model, HOOK, texts, context_size=16)
    store = harvest_activations(model, HOOK, texts, tmp_path / "s", model_name="m", context_size=16,
                                exclude_special=True)
    n_pad = int((tokens_BT == tok.pad_token_id).sum())
    assert n_pad > 0 and tokens_BT.shape[1] == 16  # rows really were cut and padded
    keep_BT = ~torch.isin(tokens_BT, torch.tensor(tok.all_special_ids))
    assert store.n_tokens == tokens_BT.numel() - n_pad - len(texts) - int(
        (torch.isin(tokens_BT, torch.tensor(tok.all_special_ids)) & (tokens_BT != tok.pad_token_id)
         & (tokens_BT != tok.bos_token_id)).sum())
    ids_N = store.token_ids()
    assert not torch.isin(ids_N, torch.tensor(tok.all_special_ids)).any()
    assert torch.equal(ids_N, tokens_BT[keep_BT])
    torch.testing.assert_close(store.read_all(), ref_BTD[keep_BT], rtol=0, atol=1e-6)


def test_bad_hook_lists_valid_hooks(model, texts, tmp_path):
    with pytest.raises(HookNotFoundError) as err:
        harvest_activations(model, "blocks.9.hook_resid_post", texts, tmp_path / "s", model_name="m")
    assert "blocks.9.hook_resid_post" in str(err.value) and "blocks.1.hook_resid_post" in str(err.value)
    assert not (tmp_path / "s").exists()  # nothing was started


def test_interrupted_harvest_resumes_exactly(model, texts, tmp_path):
    kw = dict(model_name="zoo:tiny-a", batch_size=5, shard_tokens=97, exclude_special=True)
    full = harvest_activations(model, HOOK, texts, tmp_path / "full", **kw)

    calls = []

    def crash_on_third(done, total):
        calls.append(done)
        if len(calls) == 3:  # mid-run, with one shard done and rows of the next in memory
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        harvest_activations(model, HOOK, texts, tmp_path / "part", on_progress=crash_on_third, **kw)
    with pytest.raises(ArtifactError, match="resume"):
        ActivationStore.open(tmp_path / "part")
    state = json.loads((tmp_path / "part" / "progress.json").read_text())
    assert state["shard_rows"] and state["row_skip"] > 0  # stopped mid-batch: the hard case
    seen = []
    resumed = harvest_activations(model, HOOK, texts, tmp_path / "part",
                                  on_progress=lambda d, t: seen.append(d), **kw)
    assert seen[0] > 5 and seen[-1] == len(texts)  # it continued, it did not start over
    assert resumed.shard_rows == full.shard_rows
    assert torch.equal(resumed.read_all(), full.read_all())
    assert torch.equal(resumed.token_ids(), full.token_ids())
    # A finished store is returned as is; a different config in the same dir is refused.
    again = harvest_activations(model, HOOK, texts, tmp_path / "part",
                                on_progress=lambda d, t: pytest.fail("recomputed"), **kw)
    assert again.n_tokens == full.n_tokens
    with pytest.raises(ArtifactError, match="different config"):
        harvest_activations(model, "blocks.1.hook_resid_post", texts, tmp_path / "part", **kw)


MANY = [HOOK, "blocks.1.hook_mlp_out", "blocks.0.attn.hook_z"]


def test_several_hooks_in_one_pass_equal_one_harvest_each(model, texts, tmp_path, monkeypatch):
    from sae_core.activations import harvest

    kw = dict(model_name="zoo:tiny-a", batch_size=5, shard_tokens=97, exclude_special=True)
    single = [harvest_activations(model, h, texts, tmp_path / f"one{i}", **kw) for i, h in enumerate(MANY)]
    passes = []
    real = harvest.capture
    monkeypatch.setattr(harvest, "capture", lambda *a, **k: passes.append(1) or real(*a, **k))
    many = harvest_hooks(model, MANY, texts, [tmp_path / f"many{i}" for i in range(3)], **kw)
    assert len(passes) == -(-len(texts) // 5)  # one forward pass per batch for all three hooks
    for one, got, hook in zip(single, many, MANY):
        assert got.meta.hook == hook and got.shard_rows == one.shard_rows and got.d == one.d
        assert torch.equal(got.read_all(), one.read_all()) and torch.equal(got.token_ids(), one.token_ids())
        assert all(torch.equal(x, y) for x, y in zip(got.row_keys(), one.row_keys()))
    with pytest.raises(SAECoreError, match="one out_dir per hook"):
        harvest_hooks(model, MANY, texts, [tmp_path / "x"], **kw)


def test_several_hooks_resume_from_the_store_that_got_least_far(model, texts, tmp_path):
    kw = dict(model_name="zoo:tiny-a", batch_size=5, shard_tokens=41, exclude_special=True)
    full = harvest_hooks(model, MANY[:2], texts, [tmp_path / "f0", tmp_path / "f1"], **kw)
    dirs = [tmp_path / "p0", tmp_path / "p1"]

    def crash_after(n):
        calls = []

        def on_progress(done, total):
            calls.append(done)
            if len(calls) == n:
                raise KeyboardInterrupt
        return on_progress
    with pytest.raises(KeyboardInterrupt):
        harvest_hooks(model, MANY[:2], texts, dirs, on_progress=crash_after(2), **kw)
    with pytest.raises(KeyboardInterrupt):  # the second store alone gets further
        harvest_activations(model, MANY[1], texts, dirs[1], on_progress=crash_after(2), **kw)
    shards = [len(json.loads((d / "progress.json").read_text())["shard_rows"]) for d in dirs]
    assert shards[0] < shards[1]
    resumed = harvest_hooks(model, MANY[:2], texts, dirs, **kw)
    for got, want in zip(resumed, full):
        assert got.shard_rows == want.shard_rows and torch.equal(got.read_all(), want.read_all())


def test_harvest_to_workspace_is_idempotent(model, tmp_path):
    ws = Workspace(tmp_path / "ws")
    art = harvest_to_workspace(ws, "zoo:tiny-a", HOOK, n_tokens=400, seed=1, model=model)
    assert [a.name for a in ws.list("activations")] == [art.name]
    assert art.name.startswith("tiny-a__blocks.0.hook_resid_post__")
    store = ActivationStore.open(art.path)
    assert store.n_tokens == art.meta["n_tokens"] >= 400 and art.meta["d"] == model.cfg.d_model
    assert art.meta["seed"] == 1 and art.meta["context_size"] == 64
    again = harvest_to_workspace(ws, "zoo:tiny-a", HOOK, n_tokens=400, seed=1, model=model,
                                 on_progress=lambda d, t: pytest.fail("recomputed"))
    assert again.name == art.name and len(ws.list("activations")) == 1
    # several hooks: the existing one is reused, the others harvested together, all registered
    arts = harvest_hooks_to_workspace(ws, "zoo:tiny-a", [MANY[1], HOOK, MANY[2]], n_tokens=400, seed=1, model=model)
    assert arts[1].name == art.name and [a.hook for a in arts] == [MANY[1], HOOK, MANY[2]]
    assert len(ws.list("activations")) == 3
    stores = [ActivationStore.open(a.path) for a in arts]
    assert stores[0].shard_rows == stores[1].shard_rows == stores[2].shard_rows
    assert torch.equal(stores[0].row_keys()[0], stores[1].row_keys()[0])
    alone = harvest_to_workspace(Workspace(tmp_path / "ws2"), "zoo:tiny-a", MANY[2], n_tokens=400, seed=1,
                                 model=model)
    assert torch.equal(ActivationStore.open(alone.path).read_all(), stores[2].read_all())


# --- store and reader ---------------------------------------------------------------------------

def test_iter_batches_every_row_once_per_epoch(tmp_path):
    store = numbered_store(tmp_path)  # 1000 rows in shards of 128; buffer of 2 shards
    batches = list(iter_batches(store, 64, seed=0, epochs=2, buffer_tokens=300))
    # 1000 = 15 * 64 + 40: each epoch is 15 full batches then its 40-row tail (kept by default).
    assert [b.shape[0] for b in batches] == ([64] * 15 + [40]) * 2
    for epoch in (batches[:16], batches[16:]):
        ids = torch.cat([b[:, 0] for b in epoch]).long()
        assert sorted(ids.tolist()) == list(range(1000))
        assert not torch.equal(ids, torch.arange(1000))  # really shuffled
    assert not torch.equal(torch.cat(batches[:16]), torch.cat(batches[16:]))  # a new order per epoch


def test_iter_batches_deterministic_and_seeded(tmp_path):
    store = numbered_store(tmp_path)
    run = lambda seed: torch.cat(list(iter_batches(store, 100, seed=seed, buffer_tokens=256)))
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    plain = torch.cat(list(iter_batches(store, 100, shuffle=False)))
    assert torch.equal(plain[:, 0], torch.arange(1000.0))
    dropped = list(iter_batches(store, 300, drop_last=True))
    assert [b.shape[0] for b in dropped] == [300, 300, 300]


def test_open_rejects_missing_foreign_and_corrupt(tmp_path):
    with pytest.raises(ArtifactError, match="no activation store"):
        ActivationStore.open(tmp_path / "nope")
    (tmp_path / "other").mkdir()
    with pytest.raises(ArtifactError, match="not an activation store"):
        ActivationStore.open(tmp_path / "other")
    store = numbered_store(tmp_path)
    shard = store.shard_paths()[1]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="shard_00001"):
        ActivationStore.open(store.path)


# --- user files ---------------------------------------------------------------------------------

def test_user_files_load(tmp_path):
    acts = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    np.save(tmp_path / "a.npy", acts)
    save_file({"x": torch.from_numpy(acts)}, tmp_path / "one.safetensors")
    save_file({"acts": torch.from_numpy(acts).half(), "labels": torch.zeros(50)}, tmp_path / "named.safetensors")
    assert torch.equal(load_activation_file(tmp_path / "a.npy", d_expected=8), torch.from_numpy(acts))
    assert torch.equal(load_activation_file(tmp_path / "one.safetensors"), torch.from_numpy(acts))
    half = load_activation_file(tmp_path / "named.safetensors")
    assert half.dtype == torch.float32 and half.shape == (50, 8)
    store = import_activation_file(tmp_path / "a.npy", tmp_path / "st", hook="blocks.0.hook_resid_post")
    assert store.n_tokens == 50 and store.d == 8 and torch.equal(store.read_all(), torch.from_numpy(acts))
    assert (store.token_ids() == -1).all() and store.meta.source.endswith("a.npy")


def test_user_file_imports_a_block_at_a_time_in_its_own_precision(tmp_path, monkeypatch):
    from sae_core.activations import user_file

    blocks = []
    real_open = user_file.open_activation_file

    def spying_open(path, d_expected=None):
        f = real_open(path, d_expected)
        def read(a, b):
            blocks.append(b - a)
            return f.read(a, b)
        return user_file.ActivationFile(f.path, f.n, f.d, f.dtype, read)
    monkeypatch.setattr(user_file, "open_activation_file", spying_open)
    acts = np.random.default_rng(1).standard_normal((1000, 8)).astype(np.float16)
    for name in ("h.npy", "h.safetensors"):
        store = import_activation_file(_write(tmp_path, name, acts), tmp_path / f"st-{name}", shard_tokens=128)
        assert max(blocks) == 128 and sum(blocks) == 1000  # never the whole file
        assert store.meta.dtype == "float16" and store.shard_rows == [128] * 7 + [104]
        assert torch.equal(store.read_all(), torch.from_numpy(acts).float())
        blocks.clear()
    fortran = np.asfortranarray(np.random.default_rng(2).standard_normal((300, 8)).astype(np.float32))
    store = import_activation_file(_write(tmp_path, "f.npy", fortran), tmp_path / "st-f", shard_tokens=128)
    assert store.meta.dtype == "float32" and torch.equal(store.read_all(), torch.from_numpy(np.ascontiguousarray(fortran)))
    bf = torch.randn(300, 8).bfloat16()
    save_file({"acts": bf}, tmp_path / "bf.safetensors")
    store = import_activation_file(tmp_path / "bf.safetensors", tmp_path / "st-bf", shard_tokens=128)
    assert store.meta.dtype == "bfloat16" and torch.equal(store.read_all(), bf.float())


def test_user_file_nan_in_a_late_block_names_its_row_and_leaves_no_store(tmp_path):
    arr = np.ones((1000, 4), np.float32)
    arr[777, 1] = np.nan
    with pytest.raises(ActivationFileError, match="1 non-finite values.*rows 768-895; the first at row 777, column 1"):
        import_activation_file(_write(tmp_path, "late.npy", arr), tmp_path / "st", shard_tokens=128)
    with pytest.raises(ArtifactError, match="not an activation store"):
        ActivationStore.open(tmp_path / "st")


def _write(tmp_path, name, arr):
    p = tmp_path / name
    if name.endswith(".npy"):
        np.save(p, arr)
    else:
        save_file({"acts": torch.as_tensor(arr)}, p)
    return p


@pytest.mark.parametrize("name,arr,match", [
    ("3d.npy", np.zeros((2, 3, 4), np.float32), r"shape \(2, 3, 4\) \(3-D\); expected 2-D"),
    ("1d.safetensors", np.zeros(5, np.float32), r"\(1-D\); expected 2-D"),
    ("int.npy", np.zeros((4, 8), np.int64), "dtype int64, not a floating-point"),
    ("int.safetensors", np.zeros((4, 8), np.int32), "dtype int32, not a floating-point"),
    ("long.npy", np.zeros((4, 8), np.longdouble), "dtype float128, not a floating-point type torch reads"),
])
def test_user_file_bad_shape_or_dtype(tmp_path, name, arr, match):
    with pytest.raises(ActivationFileError, match=match):
        load_activation_file(_write(tmp_path, name, arr))


def test_user_file_nan_says_how_many_and_where(tmp_path):
    arr = np.ones((10, 4), np.float32)
    arr[3, 2], arr[7, 0] = np.nan, np.inf
    with pytest.raises(ActivationFileError, match="2 non-finite values.*row 3, column 2"):
        load_activation_file(_write(tmp_path, "nan.npy", arr))


def test_user_file_width_mismatch(tmp_path):
    p = _write(tmp_path, "w.safetensors", np.ones((10, 64), np.float32))
    with pytest.raises(ActivationFileError, match="width mismatch: file has d=64, the hook has d=128"):
        load_activation_file(p, d_expected=128)


def test_user_file_truncated_foreign_or_unknown(tmp_path):
    good = _write(tmp_path, "good.safetensors", np.ones((100, 16), np.float32))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ActivationFileError, match="cut.safetensors is not a readable safetensors.*truncated"):
        load_activation_file(cut)
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(ActivationFileError, match="not a readable safetensors"):
        load_activation_file(foreign)
    good_npy = _write(tmp_path, "good.npy", np.ones((100, 16), np.float32))
    cut_npy = tmp_path / "cut.npy"
    cut_npy.write_bytes(good_npy.read_bytes()[:300])
    with pytest.raises(ActivationFileError, match="not a readable .npy"):
        load_activation_file(cut_npy)
    (tmp_path / "a.pt").write_bytes(b"x")
    with pytest.raises(ActivationFileError, match="must be .npy or .safetensors"):
        load_activation_file(tmp_path / "a.pt")
    save_file({"a": torch.ones(2, 2), "b": torch.ones(2, 2)}, tmp_path / "two.safetensors")
    with pytest.raises(ActivationFileError, match="holds 2 tensors"):
        load_activation_file(tmp_path / "two.safetensors")
