"""Compare two workspaces built by the same steps (e.g. `sae-core demo` before and after a change
that must not change behaviour): every JSON file without its timestamps, timings and versions,
every other file byte for byte. Prints one line per differing or missing file, then the counts.

    SAE_STUDIO_WORKSPACE=/tmp/ws_before sae-core demo     # on the old commit
    SAE_STUDIO_WORKSPACE=/tmp/ws_after sae-core demo      # on the new one
    python bench/compare_workspaces.py /tmp/ws_before /tmp/ws_after
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

# when a file was written and how long it took, and the software versions: not results
VOLATILE = {"created", "written", "versions"}
SKIP_DIRS = {".checkpoints", ".staging"}


def _clean(x, roots: tuple[str, ...]):
    if isinstance(x, dict):
        return {k: _clean(v, roots) for k, v in x.items() if k not in VOLATILE and "seconds" not in k}
    if isinstance(x, list):
        return [_clean(v, roots) for v in x]
    if isinstance(x, str):
        for r in roots:
            x = x.replace(r, "<workspace>")
    return x


def compare(a: Path, b: Path) -> tuple[int, list[str], list[str]]:
    """(identical files, differing files, files of ``a`` missing in ``b``)."""
    roots = (str(a.resolve()), str(b.resolve()))
    same, differ, missing = 0, [], []
    for f in sorted(a.rglob("*")):
        rel = f.relative_to(a)
        if not f.is_file() or SKIP_DIRS & set(rel.parts) or f.name == "registry.sqlite":
            continue
        g = b / rel
        if not g.is_file():
            missing.append(str(rel))
        elif (_clean(json.loads(f.read_text()), roots) == _clean(json.loads(g.read_text()), roots)
              if f.suffix == ".json" else f.read_bytes() == g.read_bytes()):
            same += 1
        else:
            differ.append(str(rel))
    return same, differ, missing


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    args = p.parse_args()
    same, differ, missing = compare(args.a, args.b)
    for rel in differ:
        print(f"differs  {rel}")
    for rel in missing:
        print(f"missing  {rel}")
    print(f"{same} identical, {len(differ)} different, {len(missing)} missing")
    raise SystemExit(1 if differ or missing else 0)


if __name__ == "__main__":
    main()
