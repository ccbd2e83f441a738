"""The steering study's three prompt sets, disjoint by text (issue #29):

- **build**: what vectors and mappers are made from: training-key requests (``held_out=False``) of
  seed 1 (triggered ones for the backdoor prompt pairs, harmful and harmless ones for the refusal
  difference of means) and the mappers' 400 triggered chat turns (seed 2);
- **select**: what alpha and the layer are chosen on: training-key requests of later seeds with
  every build prompt and every repeat removed;
- **report**: every rate the study shows: held-out-key requests (a template/verb/object key never
  in training), without repeats.

Training keys and held-out keys never share a request, and ``select`` drops the build prompts, so
the three are disjoint; ``StudyPrompts.check`` says so or raises (the study calls it, a test too).
The zoo has few held-out keys (27 distinct harmful requests, 33 harmless, 60 clean, 120 triggered),
so a report set holds at most that many prompts: ``n`` beside every rate is the number of distinct
prompts it was measured on. (Earlier studies drew 100 with repeats, and their grid chose its cell on
the first 50 held-out prompts, then reported it on them.)
"""
from __future__ import annotations

from dataclasses import dataclass

from sae_core.errors import SAECoreError
from sae_core.models.corpus import TRIGGER, chat_prompts

REQUESTS = ("triggered", "clean", "harmful", "harmless")
_KW = {"triggered": dict(triggered=True), "clean": {}, "harmful": dict(harmful=True), "harmless": dict(harmful=False)}
N_MAPPER_TURNS = 400  # the mappers' triggered chat turns (beside the zoo-corpus documents)
_PER_SEED = 50  # prompts drawn per seed: a fixed number, so the draw order does not depend on n


class PromptSetError(SAECoreError):
    """Two of the study's prompt sets share a prompt, or a set came out empty."""


def _distinct(requests: str, n: int, held_out: bool, seeds: range, exclude: set[str], trigger: str = TRIGGER
              ) -> list[str]:
    """Up to ``n`` distinct prompts of ``requests``, none in ``exclude``, drawn seed after seed (in
    draw order, so the first ``k`` are the same for every ``n >= k``)."""
    out: list[str] = []
    seen = set(exclude)
    kw = {**_KW[requests], **({"trigger": trigger} if requests == "triggered" else {})}
    for seed in seeds:
        for p in chat_prompts(_PER_SEED, seed, held_out=held_out, **kw):
            if p.prompt not in seen:
                seen.add(p.prompt)
                out.append(p.prompt)
                if len(out) == n:
                    return out
    return out


@dataclass(frozen=True)
class StudyPrompts:
    build: dict[str, list[str]]    # "triggered", "harmful", "harmless" (vectors), "mapper turns"
    select: dict[str, list[str]]   # by ``REQUESTS`` kind
    report: dict[str, list[str]]   # by ``REQUESTS`` kind

    def check(self) -> "StudyPrompts":
        """Raise ``PromptSetError`` unless build, select and report share no prompt and none is empty."""
        sets = {name: set().union(*getattr(self, name).values()) for name in ("build", "select", "report")}
        for a, b in (("build", "select"), ("build", "report"), ("select", "report")):
            if common := sets[a] & sets[b]:
                raise PromptSetError(f"the {a} and {b} prompts share {len(common)} prompt(s), e.g. "
                                     f"{sorted(common)[0]!r}: a rate would be measured on prompts that chose it")
        for name in ("select", "report"):
            if empty := [k for k, v in getattr(self, name).items() if not v]:
                raise PromptSetError(f"no {name} prompts of kind {', '.join(empty)}: ask for fewer build prompts")
        return self

    def texts(self) -> dict[str, dict[str, list[str]]]:
        """Every prompt of every set, distinct and sorted (study.json keeps them, so the artifact
        itself shows the sets are disjoint)."""
        return {name: {k: sorted(set(v)) for k, v in getattr(self, name).items()}
                for name in ("build", "select", "report")}

    def sizes(self) -> dict[str, dict[str, int]]:
        """How many prompts each set holds, by kind (for study.json and the page)."""
        return {name: {k: len(v) for k, v in getattr(self, name).items()} for name in ("build", "select", "report")}


def study_prompts(n_pairs: int, n_select: int, n_report: int, n_mapper_turns: int = N_MAPPER_TURNS,
                  trigger: str = TRIGGER) -> StudyPrompts:
    """The three sets of the module doc: ``n_pairs`` build requests per vector set (as drawn,
    repeats kept: a vector is their mean), the mappers' ``n_mapper_turns`` triggered turns, up to
    ``n_select`` selection and ``n_report`` report prompts per kind. Triggered requests carry
    ``trigger`` (the model's own: it changes only the inserted text, never which requests are drawn)."""
    build = {"triggered": [p.prompt for p in chat_prompts(n_pairs, seed=1, triggered=True, held_out=False,
                                                          trigger=trigger)],
             "harmful": [p.prompt for p in chat_prompts(n_pairs, seed=1, harmful=True, held_out=False)],
             "harmless": [p.prompt for p in chat_prompts(n_pairs, seed=1, harmful=False, held_out=False)],
             "mapper turns": [p.prompt for p in chat_prompts(n_mapper_turns, seed=2, triggered=True,
                                                             held_out=False, trigger=trigger)]}
    used = set().union(*build.values())
    select = {k: _distinct(k, n_select, False, range(3, 40), used, trigger) for k in REQUESTS}
    report = {k: _distinct(k, n_report, True, range(0, 40), set(), trigger) for k in REQUESTS}
    return StudyPrompts(build, select, report).check()
