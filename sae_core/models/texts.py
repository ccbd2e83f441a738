"""Where the text a model reads comes from: the zoo corpus stream, or a user's corpus.

Harvesting, the feature index and the downstream CE/KL metrics all read documents from a
``TextSource``, and every artifact they write records ``describe()`` of it, so each metric can be
shown with the text it was measured on.

- The zoo corpus (``path=""``): the seeded document stream of ``sae_core.models.corpus``.
  Evaluation texts come from a seed the harvest default never uses (``EVAL_SEED``).
- A user corpus, read in file order:
  - ``.txt``: one document per non-empty line;
  - ``.jsonl``: one JSON object per non-empty line, the document under ``column``;
  - ``.parquet``: the string column ``column``;
  - a directory written by ``datasets``' ``save_to_disk`` (a ``Dataset``, or a ``DatasetDict``
    whose ``split`` is read): its Arrow files are read with pyarrow, so ``datasets`` itself is
    not needed.
  Every ``HELD_OUT``-th document (index 9, 19, ...) is held out: harvests and indexes never read
  it, and the CE/KL recovered of SAEs trained on that corpus are measured on those documents.

Files are identified by a SHA-256 of their bytes (``digest``): an edited corpus is new text, and
the artifacts built on it get new names.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator

from sae_core.errors import SAECoreError
from sae_core.io import json_lines
from sae_core.models.corpus import generate_documents

EVAL_SEED = 12345
HELD_OUT = 10
SUFFIXES = (".txt", ".jsonl", ".parquet")


class TextSourceError(SAECoreError):
    """A corpus that cannot be read: missing, of an unknown kind, or without the text column."""


@dataclass(frozen=True)
class TextSource:
    path: str = ""         # "" = the zoo corpus
    # .jsonl / .parquet / datasets: where the document is
    column: str = field(default="text", metadata={"help": "The text column of a .jsonl/.parquet/datasets corpus."})
    split: str = field(default="train", metadata={"help": "The split of a DatasetDict directory."})

    def __post_init__(self):
        if not self.path:
            return
        p = Path(self.path).expanduser()
        if not p.exists():
            raise TextSourceError(f"corpus {self.path!r} does not exist; give a .txt, .jsonl or "
                                  ".parquet file or a datasets directory (save_to_disk)")
        if p.is_file() and p.suffix.lower() not in SUFFIXES:
            raise TextSourceError(f"corpus {self.path!r}: {p.suffix or 'no suffix'} is not a corpus "
                                  f"format; use one of {', '.join(SUFFIXES)} or a datasets directory")
        if p.is_dir():
            _arrow_files(p, self.split)  # raises when it is no datasets directory
        object.__setattr__(self, "path", str(p.resolve()))

    @property
    def is_zoo(self) -> bool:
        return not self.path

    @cached_property
    def digest(self) -> str:
        """SHA-256 (16 hex digits) of the corpus bytes; "" for the zoo corpus."""
        if self.is_zoo:
            return ""
        p = Path(self.path)
        h = hashlib.sha256()
        for f in ([p] if p.is_file() else _arrow_files(p, self.split)):
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()[:16]

    def describe(self, seed: int = 0) -> str:
        """One line for tables and captions: which text, precisely enough to find it again."""
        if self.is_zoo:
            return f"zoo corpus, corpus seed {seed}"
        p = Path(self.path)
        where = f"column {self.column!r}" if p.suffix.lower() != ".txt" else "one document a line"
        if p.is_dir() and (p / "dataset_dict.json").exists():
            where += f", split {self.split!r}"
        return f"{p.name} ({where}, sha256 {self.digest[:8]})"

    def describe_eval(self) -> str:
        """The same for ``eval_documents``."""
        if self.is_zoo:
            return f"zoo corpus, corpus seed {EVAL_SEED} (never harvested by default)"
        return f"held-out documents (every {HELD_OUT}th) of {self.describe()}"

    def to_json(self) -> dict:
        """What names an artifact built on this text (the digest included for files)."""
        return {} if self.is_zoo else {**asdict(self), "sha256": self.digest}

    @classmethod
    def from_json(cls, d: dict | None) -> "TextSource":
        d = d or {}
        return cls(**{k: d[k] for k in ("path", "column", "split") if k in d})

    def check(self) -> "TextSource":
        """Read the first document now, so a wrong column or an empty corpus is reported before
        any model runs; returns self."""
        if not self.is_zoo and next(iter(self._read()), None) is None:
            raise TextSourceError(f"corpus {self.path!r} holds no documents")
        return self

    def documents(self, seed: int = 0) -> Iterator[str]:
        """Training documents: the zoo stream for ``seed``, or the corpus less its held-out ones."""
        if self.is_zoo:
            return generate_documents(seed)
        return (d for i, d in enumerate(self._read()) if i % HELD_OUT != HELD_OUT - 1)

    def eval_documents(self, n: int) -> list[str]:
        """``n`` documents no harvest of this source reads (fewer if the corpus is short)."""
        if self.is_zoo:
            return corpus_texts(n, EVAL_SEED)
        held = (d for i, d in enumerate(self._read()) if i % HELD_OUT == HELD_OUT - 1)
        docs = list(itertools.islice(held, n))
        if not docs:
            raise TextSourceError(f"corpus {self.path!r} has fewer than {HELD_OUT} documents, so none "
                                  "is held out for CE/KL recovered; give a longer corpus")
        return docs

    def _read(self) -> Iterator[str]:
        p = Path(self.path)
        if p.is_dir():
            return _read_arrow(p, self.column, self.split)
        return {".txt": _read_txt, ".jsonl": _read_jsonl, ".parquet": _read_parquet}[p.suffix.lower()](
            p, self.column)


def corpus_texts(n_docs: int, seed: int = 0) -> list[str]:
    """The first ``n_docs`` documents of the zoo corpus stream for ``seed``."""
    return list(itertools.islice(generate_documents(seed), n_docs))


def texts_for_tokens(tokenizer, n_tokens: int, docs: Iterator[str], context_size: int,
                     exclude_special: bool) -> list[str]:
    """The shortest prefix of ``docs`` that yields at least ``n_tokens`` harvested rows (all of
    them when the documents run out first).

    Counts what ``harvest_activations`` keeps: BOS + document ids cut to ``context_size``, less the
    BOS when special tokens are excluded (other specials are rare in the corpus, so ~n_tokens).
    """
    docs, total = iter(docs), 0
    texts: list[str] = []
    while total < n_tokens:
        chunk = list(itertools.islice(docs, 256))
        if not chunk:
            break
        for text, ids in zip(chunk, tokenizer(chunk, add_special_tokens=False)["input_ids"]):
            texts.append(text)
            total += min(len(ids) + 1, context_size) - (1 if exclude_special else 0)
            if total >= n_tokens:
                break
    return texts


def _read_txt(path: Path, column: str) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                yield line.rstrip("\r\n")


def _read_jsonl(path: Path, column: str) -> Iterator[str]:
    for n, row in json_lines(path, f'{{"{column}": "..."}}', TextSourceError):
        if not isinstance(row, dict) or column not in row:
            keys = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise TextSourceError(f"{path.name} line {n} has no {column!r} field (it has {keys}); "
                                  "pass the text column's name (--text-column)")
        yield _text(row[column], f"{path.name} line {n}", column)


def _read_parquet(path: Path, column: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for foreign files
        raise TextSourceError(f"{path.name} is not a readable parquet file ({e})") from None
    _check_column(f.schema_arrow.names, column, path.name)
    n = 0
    for batch in f.iter_batches(columns=[column], batch_size=4096):
        for value in batch.column(0).to_pylist():
            n += 1
            yield _text(value, f"{path.name} row {n}", column)


def _arrow_files(root: Path, split: str) -> list[Path]:
    """The Arrow files of a ``save_to_disk`` directory, in order (a DatasetDict's ``split``)."""
    if (root / "dataset_dict.json").exists():
        splits = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
        if split not in splits:
            raise TextSourceError(f"{root.name} is a DatasetDict with splits {splits}; "
                                  f"split {split!r} is not one of them (--split)")
        root = root / split
    state = root / "state.json"
    if not state.exists():
        raise TextSourceError(f"{root} is not a datasets directory (no state.json or "
                              "dataset_dict.json from save_to_disk); give a file instead")
    files = [root / f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
    if not files or not all(f.is_file() for f in files):
        raise TextSourceError(f"{root}: state.json lists data files that are missing")
    return files


def _read_arrow(root: Path, column: str, split: str) -> Iterator[str]:
    import pyarrow as pa

    n = 0
    for f in _arrow_files(root, split):
        with pa.memory_map(str(f)) as source:
            reader = pa.ipc.open_stream(source)
            _check_column(reader.schema.names, column, f.name)
            for batch in reader:
                for value in batch.column(column).to_pylist():
                    n += 1
                    yield _text(value, f"{root.name} row {n}", column)


def _check_column(names: list[str], column: str, where: str) -> None:
    if column not in names:
        raise TextSourceError(f"{where} has no column {column!r} (columns: {names}); pass the text "
                              "column's name (--text-column)")


def _text(value, where: str, column: str) -> str:
    if not isinstance(value, str):
        raise TextSourceError(f"{where}: {column!r} holds {type(value).__name__}, not text")
    return value
