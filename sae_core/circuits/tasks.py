"""Sequence-continuation tasks as circuit discovery needs them: clean prompts, corrupted
counterparts of the same token length, the answer and the distractor of each.

Following arXiv 2311.04131: a clean prompt shows ``shown`` consecutive members of a sequence
(digits, number words, months; days and letters from the zoo corpus too) in a template, and asks
for the next; the distractor is the last member shown (the paper's ``s4``). Its corrupted
counterpart keeps everything but the members, which are drawn at random from the sequence's
first 12 (0-11 for digits and number words: not the authors' 1-12, which ``paper=True`` uses). A
prompt is kept only when the model's top-1 is the answer and p(answer) > 2 p(distractor), as in
the authors' code (``generate_data.py:get_good_prompts_numerals``); ``FilterStats`` reports what
the filter dropped. By default one template per set, months wrap (November December January).

``paper=True``: the prompts as the authors made them (apartresearch/seqcont_circuits):
- three verb templates mixed in one set, in thirds and in their order: ``{word} done in``,
  ``{word} lost in``, ``{name} born in`` (the committed ``data/{task}/{task}_prompts_{done,lost,
  names}.pkl`` that ``run_edge_ablation.py`` concatenates; ``generate_data.py:
  generate_prompts_list`` writes them with "was", which the ``paper`` template keeps). A verb the
  tokenizer does not hold as one token is replaced by a stand-in from the zoo's words (``lost`` ->
  ``found``, ``born`` -> ``lived``), and ``TaskSet.verbs`` says so;
- members from the authors' twelve (1-12, one-twelve, January-December), first members cycling
  through the first eight (``for i in range(0, 8)``): nothing wraps, the answer is at most the 12th;
- corrupted members drawn from the same twelve with r4 - 1 != r3 (``generate_data.py:
  generate_prompts_list_corr``): the corrupted prompt never ends on a step of the sequence.
Not reproduced: the authors keep number-word and month prompts only in whole groups of eight
starts that pass on both tasks (``get_good_prompts_nw_months``); here each prompt is filtered alone.

Templates: ``sentence`` is the paper's shape in the zoo's words ("Van done in March . Hat done in
April . Sun done in"), ``paper`` the paper's own ("Van was born in March . ..."), ``bare`` and
``comma`` plain runs. Every member and word must be one token of the model's tokenizer (a word the
tokenizer splits or does not know is a clear error), so that all prompts of a task have the same
positions and a mean over the corrupted set per position is defined.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

import torch

from sae_core.errors import SAECoreError
from sae_core.models.corpus import NAMES, NOUNS, SEQUENCE_TASKS

TEMPLATES = ("sentence", "paper", "bare", "comma")
TEMPLATE_WORDS = {"sentence": ["done", "in"], "paper": ["was", "born", "in"], "bare": [], "comma": []}
CORRUPT_POOL = 12  # corrupted members come from each sequence's first 12 (the paper's 1-12)
# paper=True (module doc): the authors' three verbs in their order, each with its subjects
PAPER_VERBS = (("done", "words"), ("lost", "words"), ("born", "names"))
STAND_INS = {"done": "done", "lost": "found", "born": "lived"}  # the zoo's one-token words for theirs
PAPER_FIRST = {"digits": 1, "number_words": 1}  # their numerals and number words start at 1 / one
PAPER_STARTS = 8                                 # their first members: the first eight of the twelve


class CircuitError(SAECoreError):
    """A circuit task or analysis that cannot run as asked."""


@dataclass(frozen=True)
class TaskConfig:
    task: str = "digits"
    template: str = "sentence"
    n_prompts: int = 64            # candidates generated; the filter keeps some of them
    shown: int = 4                 # members shown before the one asked for
    starts: tuple[int, ...] = ()   # first members allowed (indices; () = every start that fits)
    seed: int = 0
    paper: bool = False            # the authors' prompts (module doc)

    def __post_init__(self):
        if self.task not in SEQUENCE_TASKS:
            raise CircuitError(f"task {self.task!r}: choose one of {', '.join(SEQUENCE_TASKS)}")
        if self.template not in TEMPLATES:
            raise CircuitError(f"template {self.template!r}: choose one of {', '.join(TEMPLATES)}")
        items, cyclic = SEQUENCE_TASKS[self.task]
        if not 2 <= self.shown < len(items):
            raise CircuitError(f"shown={self.shown}: show between 2 and {len(items) - 1} members of {self.task}")
        if self.n_prompts < 2:
            raise CircuitError(f"n_prompts={self.n_prompts}: give at least 2 (64 is usual)")
        last = len(paper_window(self.task)) - self.shown - 1 if self.paper else \
            len(items) - 1 if cyclic else len(items) - self.shown - 1
        if last < 0:
            raise CircuitError(f"shown={self.shown}: the authors' {len(paper_window(self.task))} members of "
                               f"{self.task} cannot show that many without wrapping; show fewer")
        if bad := [s for s in self.starts if not 0 <= s <= last]:
            raise CircuitError(f"starts {bad}: {self.task} with {self.shown} shown starts at 0..{last}"
                               + (" (the authors' members, paper=True)" if self.paper else ""))

    def to_json(self) -> dict:
        return {**asdict(self), "starts": list(self.starts)}


@dataclass(frozen=True)
class FilterStats:
    generated: int
    kept: int
    wrong_top1: int        # the model's top-1 was not the answer
    weak_margin: int       # top-1 right, but p(answer) <= 2 p(distractor)
    excluded: dict[str, str] = field(default_factory=dict)  # members left out: word -> its pieces

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TaskSet:
    """The kept prompts of one task, all of one token length ``T``."""
    cfg: TaskConfig
    clean_BT: torch.Tensor
    corrupt_BT: torch.Tensor
    answer_B: torch.Tensor       # token id of the next member
    distractor_B: torch.Tensor   # token id of the last member shown
    texts: list[str]
    corrupt_texts: list[str]
    stats: FilterStats
    members: list[str] = field(default_factory=list)  # the sequence's single-token members, for head analyses
    verbs: list[str] = field(default_factory=list)    # paper=True: the verbs used ("found (for lost)")
    subjects: str = ""                                # the subjects' token length where not one token

    def __len__(self) -> int:
        return self.clean_BT.shape[0]


def paper_window(task: str) -> list[str]:
    """The authors' twelve members of ``task`` (1-12, one-twelve, January-December)."""
    items, _ = SEQUENCE_TASKS[task]
    first = PAPER_FIRST.get(task, 0)
    return list(items[first:first + CORRUPT_POOL])


def _render(template: str, words: list[str], members: list[str], ask: str | None, verb: str | None = None) -> str:
    """``members`` in ``template``; ``ask``: the word whose member is asked for (sentence forms);
    ``verb``: the sentence's verb (default ``done`` for ``sentence``, ``born`` for ``paper``)."""
    if template == "bare":
        return " ".join(members)
    if template == "comma":
        return " , ".join(members) + " ,"
    verb = f"{verb or 'done'} in" if template == "sentence" else f"was {verb or 'born'} in"
    return " ".join(f"{w} {verb} {m} ." for w, m in zip(words, members)) + f" {ask} {verb}"


def split_words(tokenizer, words: list[str]) -> tuple[dict[str, int], dict[str, str]]:
    """``(ids, excluded)``: each word's token id as it appears after a space, where it is one known
    token; the others with the pieces the tokenizer makes of them (a byte-level BPE splits " twelve"
    into " tw" + "elve"; a word-level one maps an unknown word to its UNK token)."""
    ids, excluded = {}, {}
    unk = tokenizer.unk_token_id
    for w in dict.fromkeys(words):
        enc = tokenizer.encode(" " + w, add_special_tokens=False)
        if len(enc) != 1 or (unk is not None and enc[0] == unk and unk != tokenizer.bos_token_id):
            excluded[w] = _pieces(tokenizer, enc)
        else:
            ids[w] = enc[0]
    return ids, excluded


def space_sensitive(tokenizer) -> bool:
    """Whether a word after a space is another token than at the start of a text (byte-level BPE:
    "Monday" is 'M' + 'onday', " Monday" one token); prompts then start with a space, so that the
    first member is the same token as the others."""
    return tokenizer.encode(" a", add_special_tokens=False) != tokenizer.encode("a", add_special_tokens=False)


def one_token_ids(tokenizer, words: list[str]) -> dict[str, int]:
    """``split_words``' ids, where every word must be one token: a clear error naming each word that
    is not, with its pieces."""
    ids, excluded = split_words(tokenizer, words)
    if excluded:
        raise CircuitError("; ".join(f"{w!r} is not one token of this tokenizer but {p}" for w, p in excluded.items())
                           + ". Circuit tasks need single-token template words, so that every prompt has the same "
                           "positions: choose another template, or a model whose tokenizer holds them")
    return ids


def excluded_line(excluded: dict[str, str], task: str | None = None, most: int = 6) -> str:
    """``'0' (' ' + '0'), '9' (...) and 90 more``: the first ``most`` left-out words with their pieces,
    in the order of ``task``'s sequence (a stored result's keys come back sorted as text)."""
    order = {m: i for i, m in enumerate(SEQUENCE_TASKS[task][0])} if task in SEQUENCE_TASKS else {}
    words = sorted(excluded, key=lambda w: order.get(w, len(order)))
    shown = [f"{w!r} ({excluded[w].split(' tokens ', 1)[-1]})" for w in words[:most]]
    more = len(excluded) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _pieces(tokenizer, ids: list[int]) -> str:
    """How a word was tokenized, for messages: ``2 tokens ' tw' + 'elve'``, ``the unknown token '<unk>'``."""
    texts = [repr(tokenizer.decode([i])) for i in ids]
    if len(ids) == 1:
        return f"the unknown token {texts[0]}"
    return f"{len(ids)} tokens {' + '.join(texts)}" if ids else "no tokens"


def paper_verbs(tokenizer, template: str) -> list[tuple[str, str]]:
    """``(the authors' verb, the verb used)`` for ``paper=True``: theirs where the tokenizer holds it
    as one token, else its stand-in (``STAND_INS``); none for the bare and comma templates."""
    if template not in ("sentence", "paper"):
        return []
    out = []
    for verb, _ in PAPER_VERBS:
        enc = tokenizer.encode(" " + verb, add_special_tokens=False)
        known = len(enc) == 1 and enc[0] != tokenizer.unk_token_id
        out.append((verb, verb if known else STAND_INS[verb]))
    return out


def _corrupt_paper(rng: random.Random, window: list[str], n: int, kept: set[str]) -> list[str]:
    """``n`` members drawn from the authors' twelve (those kept), the last two redrawn until
    r4 - 1 != r3 (``generate_data.py:generate_prompts_list_corr``: r1, r2 first, then r3 and r4)."""
    pool = [m for m in window if m in kept]
    head = [rng.choice(pool) for _ in range(n - 2)]
    while True:
        r3, r4 = rng.choice(pool), rng.choice(pool)
        if window.index(r4) - 1 != window.index(r3):
            return head + [r3, r4]


def _runs(cfg: TaskConfig, starts: list[int], items: list[str], kept: set[str], excluded: dict[str, str]) -> list[int]:
    """The starts whose shown members and answer are all kept; a clear error where a start the
    user gave is not, or where none is."""
    def whole(s: int) -> bool:
        return all(items[(s + i) % len(items)] in kept for i in range(cfg.shown + 1))
    if bad := [s for s in cfg.starts if not whole(s)]:
        raise CircuitError(f"starts {bad}: a run of {cfg.shown + 1} {cfg.task} from there has a member that is not "
                           f"one token of this tokenizer ({excluded_line(excluded, cfg.task)}); choose other starts")
    good = [s for s in starts if whole(s)]
    if not good:
        raise CircuitError(f"{cfg.task}: no {cfg.shown + 1} consecutive members are single tokens of this tokenizer "
                           f"(one token: {', '.join(m for m in items if m in kept) or 'none'}; split: "
                           f"{excluded_line(excluded, cfg.task)}); show fewer members (shown={cfg.shown}) or choose "
                           "another task")
    return good


def _subjects(tokenizer, kinds: list[str], need: int) -> tuple[dict[str, list[str]], str]:
    """The words each kind of subject (``words``: nouns, ``names``) is drawn from, all of one token
    length so that every prompt keeps its positions: those that are one token; where fewer than
    ``need`` of a kind are, the length that leaves every kind the most words; failing that, the
    kind that is one token stands in for the others. A note says what was done ("" for nothing)."""
    pools = {k: NOUNS if k == "words" else NAMES for k in kinds}
    label = {"words": "nouns", "names": "names"}
    length = {k: {w: len(tokenizer.encode(" " + w, add_special_tokens=False)) for w in p} for k, p in pools.items()}
    single = {k: split_words(tokenizer, p)[0] for k, p in pools.items()}

    def of_length(n):
        return {k: [w for w in p if length[k][w] == n and (n > 1 or w in single[k])] for k, p in pools.items()}
    if all(len(g) >= need for g in of_length(1).values()):
        return of_length(1), ""
    fits = [n for n in sorted({n for ls in length.values() for n in ls.values()})
            if all(len(g) >= need for g in of_length(n).values())]
    counts = ", ".join(f"{len(single[k])} of {len(p)} {label[k]}" for k, p in pools.items())
    if fits:
        n = max(fits, key=lambda n: min(map(len, of_length(n).values())))
        groups = of_length(n)
        return groups, (" and ".join(f"{len(g)} {label[k]}" for k, g in groups.items())
                        + f" of {n} tokens each (this tokenizer holds {counts} as one token)")
    if stand_in := next((k for k in kinds if len(of_length(1)[k]) >= need), None):
        return {k: of_length(1)[stand_in] for k in kinds}, \
            f"{label[stand_in]} for every subject (this tokenizer holds {counts} as one token)"
    raise CircuitError(f"a prompt needs {need} subjects of one token length, and this tokenizer splits them unevenly "
                       f"({counts} are one token); use the bare or comma template")


def _paper_candidates(cfg: TaskConfig, verbs: list[tuple[str, str]], kept: set[str], excluded: dict[str, str],
                      subjects: dict[str, list[str]]) -> list[tuple]:
    """``(words, shown, answer, corrupted, verb)``: the three verb templates in thirds, in the
    authors' order, first members cycling through the allowed starts (module doc)."""
    window = paper_window(cfg.task)
    starts = _runs(cfg, list(cfg.starts) or list(range(min(PAPER_STARTS, len(window) - cfg.shown))),
                   window, kept, excluded)
    rng = random.Random(f"circuit-paper-{cfg.task}-{cfg.template}-{cfg.seed}")
    blocks = [(v, subjects[kind]) for (_, v), (_, kind) in zip(verbs, PAPER_VERBS)]
    blocks = blocks or [(None, subjects["words"])]
    out = []
    for b, (verb, pool) in enumerate(blocks):
        for j in range(cfg.n_prompts // len(blocks) + (b < cfg.n_prompts % len(blocks))):
            s = starts[j % len(starts)]
            run = window[s:s + cfg.shown + 1]
            words = rng.sample(pool, cfg.shown + 1)
            out.append((words, run[:-1], run[-1], _corrupt_paper(rng, window, cfg.shown, kept), verb))
    return out


def _candidates(cfg: TaskConfig, kept: set[str], excluded: dict[str, str], nouns: list[str]
                ) -> list[tuple[list[str], list[str], str, list[str]]]:
    """``(words, shown members, answer, corrupted members, verb)`` per candidate prompt."""
    items, cyclic = SEQUENCE_TASKS[cfg.task]
    last = len(items) - 1 if cyclic else len(items) - cfg.shown - 1
    starts = _runs(cfg, list(cfg.starts) or list(range(last + 1)), items, kept, excluded)
    pool = [m for m in items[:CORRUPT_POOL] if m in kept]
    rng = random.Random(f"circuit-{cfg.task}-{cfg.template}-{cfg.seed}")
    out = []
    for _ in range(cfg.n_prompts):
        s = rng.choice(starts)
        run = [items[(s + i) % len(items)] for i in range(cfg.shown + 1)]
        words = rng.sample(nouns, cfg.shown + 1)
        corrupt = [rng.choice(pool) for _ in range(cfg.shown)]
        out.append((words, run[:-1], run[-1], corrupt, None))
    return out


@torch.no_grad()
def make_task(model, cfg: TaskConfig = TaskConfig()) -> TaskSet:
    """Generate ``cfg.n_prompts`` candidates, tokenize, and keep those the model gets right by the
    paper's rule (module doc)."""
    from sae_core.models.loading import to_tokens

    tok = model.tokenizer
    items, _ = SEQUENCE_TASKS[cfg.task]
    ids, excluded = split_words(tok, list(items))
    kept = set(ids)
    verbs = paper_verbs(tok, cfg.template) if cfg.paper else []
    template_words = [w for w in TEMPLATE_WORDS[cfg.template] if not verbs or w not in dict(PAPER_VERBS)]
    one_token_ids(tok, template_words + [used for _, used in verbs])
    subjects, note = {"words": NOUNS}, ""
    if cfg.template in ("sentence", "paper"):
        kinds = list(dict.fromkeys(k for _, k in PAPER_VERBS[:len(verbs)])) or ["words"]
        subjects, note = _subjects(tok, kinds, cfg.shown + 1)
    cands = _paper_candidates(cfg, verbs, kept, excluded, subjects) if cfg.paper else \
        _candidates(cfg, kept, excluded, subjects.get("words", NOUNS))
    lead = " " if space_sensitive(tok) else ""    # every word as the tokenizer holds it after a space
    texts = [lead + _render(cfg.template, w, shown, w[-1], v) for w, shown, _, _, v in cands]
    corrupt = [lead + _render(cfg.template, w, c, w[-1], v) for w, _, _, c, v in cands]
    clean_BT, corrupt_BT = to_tokens(model, texts), to_tokens(model, corrupt)
    if clean_BT.shape != corrupt_BT.shape or (tok.pad_token_id is not None and tok.pad_token_id != tok.bos_token_id
                                              and (clean_BT[:, 1:] == tok.pad_token_id).any()):
        raise CircuitError(f"the {cfg.template} prompts of {cfg.task} do not all have one token length; a per-position "
                           "mean needs them aligned (a word of the template is split by this tokenizer)")
    answer = torch.tensor([ids[a] for _, _, a, _, _ in cands])
    distractor = torch.tensor([ids[shown[-1]] for _, shown, _, _, _ in cands])
    device = next(model.parameters()).device
    probs = torch.softmax(model(clean_BT.to(device))[:, -1].float(), -1).cpu()
    rows = torch.arange(len(cands))
    right = probs.argmax(-1) == answer
    margin = probs[rows, answer] > 2 * probs[rows, distractor]
    keep = right & margin
    stats = FilterStats(len(cands), int(keep.sum()), int((~right).sum()), int((right & ~margin).sum()), excluded)
    if stats.kept < 2:
        raise CircuitError(f"the model got {stats.kept} of {stats.generated} {cfg.task} prompts right ({cfg.template} "
                           f"template; {stats.wrong_top1} wrong top-1, {stats.weak_margin} below the 2x margin); a "
                           "circuit needs a task the model does: try another template or model")
    k = keep.nonzero().squeeze(1)
    return TaskSet(cfg, clean_BT[k], corrupt_BT[k], answer[k], distractor[k], [texts[i] for i in k.tolist()],
                   [corrupt[i] for i in k.tolist()], stats, [m for m in items if m in kept],
                   [used if used == verb else f"{used} (for {verb})" for verb, used in verbs], note)
