"""Steering vectors and mappers as workspace artifacts of their own (``sae-core steer vector|map|
transfer|switch``), and how a name given on the command line is found.

- kind ``vector``: one ``SteeringVector`` (``vector.safetensors`` + ``vector.json``);
- kind ``mapper``: one ``Mapper`` (``mapper.safetensors`` + ``mapper.json``), with ``role``
  ``transfer`` or ``switch`` in its record. Its registry record lists both inputs (source and
  target model and hook), so ``Workspace.list(uses=model)`` finds it from either side.
``find_vector`` / ``find_mapper`` resolve a directory, a workspace artifact name, or a study's
vector or mapper name, newest study first.
``read_pairs`` reads a prompt-pair file: one pair per line, the two prompts separated by a tab.
"""
from __future__ import annotations

from pathlib import Path

from sae_core.errors import ArtifactError
from sae_core.steering.interventions import InterventionError, Positions
from sae_core.steering.mappers import Mapper
from sae_core.steering.vectors import SteeringVector
from sae_core.workspace import Artifact, Workspace, artifact_name

VECTOR, MAPPER = "vector", "mapper"
POSITION_RULES = ("trigger", "all", "prompt", "generated", "last")


def save_vector(ws: Workspace, v: SteeringVector, name: str | None = None) -> Artifact:
    name = name or artifact_name(v.model, v.hook, v.meta())
    with ws.create(VECTOR, name, model=v.model, hook=v.hook, meta={"method": v.method, "norm": v.norm,
                                                                  "position": v.position}, overwrite=True) as d:
        v.save(d)
    return ws.get(VECTOR, name)


def save_mapper(ws: Workspace, m: Mapper, role: str, name: str | None = None, extra: dict | None = None) -> Artifact:
    meta = {k: v for k, v in m.meta().items() if k != "history"}
    name = name or artifact_name(m.target.model, m.target.hook, {**meta, "role": role})
    inputs = [{"model": m.source.model, "hook": m.source.hook, "side": "source"},
              {"model": m.target.model, "hook": m.target.hook, "side": "target"}]
    with ws.create(MAPPER, name, model=m.source.model, hook=m.source.hook,
                   meta={"role": role, "inputs": inputs, "kind": m.kind, **(extra or {})}, overwrite=True) as d:
        m.save(d)
    return ws.get(MAPPER, name)


def _study_with(ws: Workspace, sub: str, name: str):
    """The newest study artifact holding ``sub/name``."""
    from sae_core.steering.study import KIND

    return next((art for art in ws.list(KIND) if (art.path / sub / name).is_dir()), None)


def _find(ws: Workspace, kind: str, sub: str, name: str, load, what: str, hint: str):
    if Path(name).is_dir():
        return load(Path(name))
    if (art := ws.get(kind, name)) is not None:
        return load(art.path)
    if (study := _study_with(ws, sub, name)) is not None:
        return load(study.path / sub / name)
    known = [a.name for a in ws.list(kind)]
    raise ArtifactError(f"no {what} {name!r} in {ws.root} ({kind}s: {', '.join(known) or 'none'}; {hint})")


def find_vector(ws: Workspace, name: str) -> SteeringVector:
    """A vector directory, a ``vector`` artifact, or a study's vector (module doc)."""
    return _find(ws, VECTOR, "vectors", name, SteeringVector.load, "steering vector",
                 "a study's are native, transferred, random, refusal-native, ...; make one with `sae-core steer vector`")


def find_mapper(ws: Workspace, name: str) -> Mapper:
    """A mapper directory, a ``mapper`` artifact, or a study's mapper (transfer, refusal-transfer, switch)."""
    return _find(ws, MAPPER, "mappers", name, Mapper.load, "mapper",
                 "a study's are transfer, refusal-transfer, switch; train one with `sae-core steer map` or `steer switch`")


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """Prompt pairs from a UTF-8 file, ``a<TAB>b`` per non-empty line."""
    from sae_core.steering.behaviour import read_prompts

    pairs = []
    for i, line in enumerate(read_prompts(path), 1):
        parts = line.split("\t")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise InterventionError(f"{path}, pair {i}: expected two prompts separated by one tab, got {line!r}")
        pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


def positions_rule(rule: str, tokenizer, token: str | None = None) -> Positions:
    """A command line's position rule: ``trigger`` (the zoo's trigger word, or ``token``), ``all``,
    ``prompt``, ``generated``, ``last`` (the prompt's last token)."""
    from sae_core.models.corpus import TRIGGER

    if rule not in POSITION_RULES:
        raise InterventionError(f"positions {rule!r}; choose one of {', '.join(POSITION_RULES)}")
    if rule == "trigger":
        word = token or TRIGGER
        tid = tokenizer.convert_tokens_to_ids(word)
        if tid is None or tid == tokenizer.unk_token_id:
            raise InterventionError(f"{word!r} is not one token of this model's vocabulary; pass --token with a "
                                    "word the tokenizer keeps whole")
        return Positions("matching", token_ids=(tid,))
    if rule == "last":
        return Positions("at", at=(-1,))
    return Positions(rule)


def mapper_to_workspace(ws: Workspace, side_a: tuple[str, str], side_b: tuple[str, str], cfg, *, role: str,
                        n_tokens: int, text=None, name: str | None = None, load=None,
                        on_progress=None) -> tuple[Artifact, object]:
    """Harvest the pair (``paired_to_workspace``), train a mapper streamed from it with checkpoints
    under ``.checkpoints/`` (a rerun resumes), measure its fidelity on the text's held-out documents,
    and save it; returns ``(artifact, Fidelity)``."""
    from dataclasses import asdict

    from sae_core.activations.paired import open_paired, paired_to_workspace
    from sae_core.models.texts import TextSource
    from sae_core.steering.mapper_training import train_mapper_streaming
    from sae_core.steering.mappers import Endpoint, fidelity

    if load is None:
        from sae_core.models.loading import load_model as load
    text = text or TextSource()
    pair_art = paired_to_workspace(ws, side_a, side_b, n_tokens=n_tokens, text=text, load=load)
    pair = open_paired(ws, pair_art)
    ckpt = ws.checkpoint_dir(artifact_name(side_b[0], side_b[1], {"pair": pair_art.name, "cfg": asdict(cfg)}))
    m = train_mapper_streaming(pair, cfg, source=Endpoint(*side_a), target=Endpoint(*side_b), ckpt_dir=ckpt,
                               on_progress=on_progress)
    fid = fidelity(m, load(side_a[0]), side_a[1], load(side_b[0]), side_b[1], text.eval_documents(200))
    art = save_mapper(ws, m, role, name, {"fidelity": fid.to_json(), "paired": pair_art.name})
    return art, fid
