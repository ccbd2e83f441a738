"""The app's one helper for result artifacts: a kind listed, each result opened once and shared,
a rebuilt one opened anew, and a job's artifact listed as soon as ``build`` returns."""
from sae_app import results, session
from sae_core.io import JsonResult, atomic_write_json
from sae_core.workspace import Workspace


class Toy(JsonResult):
    FILE = "toy.json"


TOYS = results.Results("toy", Toy)


def _write(ws: Workspace, value: int, overwrite: bool = False):
    with ws.create("toy", "only", meta={"value": value}, overwrite=overwrite) as d:
        atomic_write_json(d / Toy.FILE, {"config": {}, "results": {"value": value}})
    return ws.get("toy", "only")


def test_a_built_result_is_listed_at_once_and_opened_once(tmp_path):
    root = str(Workspace(tmp_path / "ws").root)
    assert TOYS.list(root) == []  # cached for a few seconds...
    art = results.build(root, lambda ws: _write(ws, 1))
    assert TOYS.list(root) == [art]  # ...but build forgets the listings
    first = TOYS.open(str(art.path), art.created)
    assert isinstance(first, Toy) and first.results == {"value": 1}
    assert TOYS.open(str(art.path), art.created) is first  # shared, not read again

    rebuilt = results.build(root, lambda ws: _write(ws, 2, overwrite=True))
    assert rebuilt.path == art.path and rebuilt.created != art.created
    assert TOYS.open(str(rebuilt.path), rebuilt.created).results == {"value": 2}
    assert [a.meta["value"] for a in TOYS.list(root)] == [2]


def test_build_hands_the_job_its_models_with_their_locks_held(tmp_path, monkeypatch):
    monkeypatch.setattr(session, "load_model", lambda name: f"model:{name}")
    seen = []

    def job(ws, a, b):
        seen.append((a, b, session.model_lock("zoo:a").locked(), session.model_lock("zoo:b").locked()))
        return _write(ws, 3)

    results.build(str(tmp_path / "ws"), job, models=("zoo:b", "zoo:a"))
    assert seen == [("model:zoo:b", "model:zoo:a", True, True)]
    assert not session.model_lock("zoo:a").locked()

