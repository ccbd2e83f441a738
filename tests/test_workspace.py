"""The workspace: atomic artifacts, an SQLite registry rebuilt from disk, clear errors."""
import hashlib
import os
import sqlite3

import pytest

from sae_core.errors import ArtifactError
from sae_core.io import atomic_write_json, load_tensors, read_json, save_tensors
from sae_core.workspace import Workspace, artifact_name, config_hash, default_root


def test_create_registers_and_lists(tmp_path):
    ws = Workspace(tmp_path)
    with ws.create("sae", "x", model="zoo:tiny-a", hook="h", meta={"k": 1}) as d:
        (d / "w.txt").write_text("hi")
    [art] = ws.list("sae")
    assert art.name == "x" and art.meta == {"k": 1} and (art.path / "w.txt").read_text() == "hi"
    assert read_json(art.path / "artifact.json")["versions"]["torch"]
    assert ws.list("activations") == []


def test_failed_create_leaves_nothing(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(RuntimeError):
        with ws.create("sae", "x") as d:
            (d / "partial").write_text("half")
            raise RuntimeError("interrupted")
    assert ws.list() == [] and not ws.artifact_dir("sae", "x").exists()
    assert not any((tmp_path / ".staging").iterdir())


def test_existing_artifact_is_not_overwritten_by_accident(tmp_path):
    ws = Workspace(tmp_path)
    with ws.create("sae", "x"):
        pass
    with pytest.raises(ArtifactError, match="already exists"):
        with ws.create("sae", "x"):
            pass


def test_reindex_rebuilds_a_lost_registry_and_skips_corrupt_records(tmp_path):
    ws = Workspace(tmp_path)
    for n in ("a", "b"):
        with ws.create("sae", n):
            pass
    bad = tmp_path / "sae" / "junk"
    bad.mkdir()
    (bad / "artifact.json").write_text("{not json")
    (tmp_path / "registry.sqlite").unlink()
    ws = Workspace(tmp_path)
    assert ws.list() == []
    assert ws.reindex() == 2
    assert sorted(a.name for a in ws.list()) == ["a", "b"]


def test_unwritable_workspace_is_a_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ArtifactError, match="not writable"):
        Workspace(f / "ws")
    if os.geteuid() != 0:  # root can write anywhere; the file-parent case above covers it
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(ArtifactError, match="not writable"):
            Workspace(ro / "ws")


def test_names_and_hashes_are_stable():
    """Artifact names are how a rerun finds what an earlier one built (the demo, sweeps, studies):
    a change to the hash would silently orphan every workspace, so the values are pinned."""
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1}) == "d8497d9d82"
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert artifact_name("zoo:tiny-a", "blocks.1.hook_resid_post", {"n": 1}) == \
        "tiny-a__blocks.1.hook_resid_post__e5d5f7c1d2"
    assert artifact_name("EleutherAI/pythia-160m", None, {}) == "EleutherAI--pythia-160m__44136fa355"
    # the definition: the first 10 hex digits of SHA-256 over the sorted-key JSON
    assert config_hash({"b": 2, "a": 1}) == hashlib.sha256(b'{"a": 1, "b": 2}').hexdigest()[:10]


def test_an_empty_workspace_setting_means_the_default_not_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAE_STUDIO_WORKSPACE", "  ")
    assert default_root() == tmp_path / "workspace"


def test_truncated_or_foreign_safetensors_is_a_clear_error(tmp_path):
    import torch

    good = tmp_path / "t.safetensors"
    save_tensors(good, {"w": torch.arange(1000.0)})
    assert torch.equal(load_tensors(good)["w"], torch.arange(1000.0))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match="truncated"):
        load_tensors(cut)
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(b"\x80\x04\x95 this is a pickle, not safetensors")
    with pytest.raises(ArtifactError, match="not a readable safetensors"):
        load_tensors(foreign)


def test_atomic_json_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": [1, 2]})
    assert read_json(tmp_path / "a.json") == {"x": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    (tmp_path / "b.json").write_text("{")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_json(tmp_path / "b.json")
