"""The workspace: one directory where every artifact lives, and a registry the app can list.

Layout: ``<root>/<kind>/<name>/`` per artifact (``kind`` such as ``activations``, ``sae``), each
holding its files and an ``artifact.json`` (kind, name, model, hook, config, versions, created).
Names say what produced the artifact: ``<model>__<hook>__<config-hash>``.

Registry: an SQLite database, ``<root>/registry.sqlite``. Why SQLite: it ships with Python (no
dependency), its transactions make registration atomic, and many readers (each Streamlit session)
can list artifacts while a CLI job writes. The artifact directories stay the source of truth:
``reindex()`` rebuilds the registry from the ``artifact.json`` files, so a lost or stale database
loses nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sae_core.errors import ArtifactError
from sae_core.io import atomic_write_json, dumps_json, read_json

ARTIFACT_FILE = "artifact.json"
_SCHEMA = """CREATE TABLE IF NOT EXISTS artifacts (
    kind TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL, model TEXT, hook TEXT,
    created REAL NOT NULL, meta TEXT NOT NULL, PRIMARY KEY (kind, name))"""


def default_root() -> Path:
    """``$SAE_STUDIO_WORKSPACE``, or ``./workspace`` when it is unset or empty (an empty value
    must not mean the current directory)."""
    return Path(os.environ.get("SAE_STUDIO_WORKSPACE", "").strip() or "workspace").resolve()


def config_hash(config: dict) -> str:
    """Short stable hash of a JSON-able config (key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]


def artifact_name(model: str, hook: str | None, config: dict) -> str:
    """``tiny-a__blocks.1.hook_resid_post__3f2a9c01bd``: what produced it, then its config's hash."""
    safe_model = model.removeprefix("zoo:").replace("/", "--")
    return "__".join(p for p in (safe_model, hook, config_hash(config)) if p)


def versions() -> dict[str, str]:
    """Versions of the software that made an artifact (recorded in every artifact.json)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("sae-studio", "torch", "transformers", "transformer-lens", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


class WorkspaceNotWritable(ArtifactError):
    """The workspace directory cannot be created or written. The message gives the shell's advice;
    the app words its own from ``root`` and ``reason`` (``sae_app.listing.open_workspace``)."""

    def __init__(self, root: Path, reason: str):
        self.root, self.reason = root, reason
        super().__init__(f"workspace {root} is not writable ({reason}); choose another directory with "
                         "--workspace or SAE_STUDIO_WORKSPACE")


@dataclass(frozen=True)
class Artifact:
    kind: str
    name: str
    path: Path
    model: str | None
    hook: str | None
    created: float
    meta: dict[str, Any]

    @property
    def inputs(self) -> list[dict]:
        """Every (model, hook) the artifact was made from: ``meta["inputs"]`` where it has several
        (a mapper: two models and two hooks), else its one model and hook."""
        return self.meta.get("inputs") or [{"model": self.model, "hook": self.hook}]


class Workspace:
    """A workspace rooted at ``root`` (default ``$SAE_STUDIO_WORKSPACE`` or ``./workspace``)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser().resolve() if root else default_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise WorkspaceNotWritable(self.root, e.strerror or str(e)) from None
        with self._db() as db:
            db.execute(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.root / "registry.sqlite", timeout=30)
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    def artifact_dir(self, kind: str, name: str) -> Path:
        return self.root / kind / name

    @property
    def checkpoints_root(self) -> Path:
        """Where long jobs keep their checkpoints (one directory per job, ``checkpoint_dir``)."""
        return self.root / ".checkpoints"

    def checkpoint_dir(self, name: str) -> Path:
        """The checkpoint directory of the job named ``name`` (created by the job when it writes)."""
        return self.checkpoints_root / name

    @contextmanager
    def create(self, kind: str, name: str, model: str | None = None, hook: str | None = None,
               meta: dict | None = None, overwrite: bool = False) -> Iterator[Path]:
        """Yield a staging directory; on success it becomes ``<kind>/<name>`` and is registered.

        Nothing is visible (on disk or in the registry) until the block finishes, so an
        interrupted job never leaves a half-written artifact behind.
        """
        final = self.artifact_dir(kind, name)
        if final.exists() and not overwrite:
            raise ArtifactError(f"artifact {kind}/{name} already exists at {final}; remove it first "
                                "or pass overwrite=True")
        staging = self.root / ".staging" / f"{kind}--{name}--{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            yield staging
            self._write_record(staging, kind, name, model, hook, meta or {})
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.register(final)

    def adopt(self, path: Path, kind: str, name: str, model: str | None = None,
              hook: str | None = None, meta: dict | None = None) -> Artifact:
        """Record an artifact whose directory ``path`` (inside the workspace) was built in place."""
        self._write_record(path, kind, name, model, hook, meta or {})
        return self.register(path)

    @staticmethod
    def _write_record(path: Path, kind, name, model, hook, meta) -> None:
        atomic_write_json(path / ARTIFACT_FILE, {
            "kind": kind, "name": name, "model": model, "hook": hook, "created": time.time(),
            "versions": versions(), "meta": meta})

    def register(self, path: Path) -> Artifact:
        rec = read_json(Path(path) / ARTIFACT_FILE)
        art = Artifact(rec["kind"], rec["name"], Path(path), rec.get("model"), rec.get("hook"),
                       rec["created"], rec.get("meta", {}))
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?,?,?,?)",
                       (art.kind, art.name, str(art.path), art.model, art.hook, art.created,
                        dumps_json(art.meta)))
        return art

    def list(self, kind: str | None = None, model: str | None = None, uses: str | None = None) -> list[Artifact]:
        """Registered artifacts (newest first) whose directory still exists; ``uses``: only those
        with that model among their inputs."""
        query, args = "SELECT * FROM artifacts WHERE 1=1", []
        if kind:
            query, args = query + " AND kind = ?", args + [kind]
        if model:
            query, args = query + " AND model = ?", args + [model]
        with self._db() as db:
            rows = db.execute(query + " ORDER BY created DESC", args).fetchall()
        arts = [Artifact(k, n, Path(p), m, h, c, json.loads(meta)) for k, n, p, m, h, c, meta in rows]
        return [a for a in arts if a.path.exists() and (uses is None or any(i["model"] == uses for i in a.inputs))]

    def get(self, kind: str, name: str) -> Artifact | None:
        return next((a for a in self.list(kind) if a.name == name), None)

    def remove(self, kind: str, name: str) -> None:
        shutil.rmtree(self.artifact_dir(kind, name), ignore_errors=True)
        with self._db() as db:
            db.execute("DELETE FROM artifacts WHERE kind = ? AND name = ?", (kind, name))

    def reindex(self) -> int:
        """Rebuild the registry from the ``artifact.json`` files on disk; returns how many."""
        with self._db() as db:
            db.execute("DELETE FROM artifacts")
        n = 0
        for rec in sorted(self.root.glob(f"*/*/{ARTIFACT_FILE}")):
            try:
                self.register(rec.parent)
                n += 1
            except ArtifactError:
                continue  # a foreign or corrupt record is skipped, not fatal
        return n
