"""Keyword groups for semantic subspaces: the zoo's, the paper's, or a user's JSON file.

- ``zoo_groups()``: fitted to the zoo corpus, the generator's own word lists (numbers, number
  words, months, days, letters, animals, feelings, family, harmful verbs);
- ``AUTHORS_GROUPS``: the paper's eight categories with the authors' keyword lists, word for word
  (wlg1/univ_feat_geom, ``_old_code/nbs_as_py/_main_results/getSemanticScores_pythia.py``, the
  ``keywords`` dict; duplicates inside a list, such as "soon" in Time, kept as they wrote them);
- ``read_groups(path)``: a user's groups, a JSON object ``{"name": ["word", ...], ...}``.

``vocabulary_hits(groups, tokenizer)`` says which of a group's words the tokenizer spells as one
word of known tokens (``words.TokenWords.spells``; case-insensitive): the only words a top
activation's word can equal, so a group with none is empty on that model before any feature is
looked at (several of the paper's categories are on the zoo's word-level models: their vocabulary
has no countries and no biology). On a word-level tokenizer that is a word that is one token; a
byte-level BPE (``zoo:tiny-l``) spells words in pieces (" January" is ' J' + 'anuary'), and they
count too: a feature's top activations are read as the words their tokens belong to.
"""
from __future__ import annotations

import json
from pathlib import Path

from sae_core.universality.measures import UniversalityError
from sae_core.universality.words import TokenWords

AUTHORS_GROUPS: dict[str, tuple[str, ...]] = {
    "Time": (
        "day", "night", "week", "month", "year", "hour", "minute", "second", "now", "soon",
        "later", "early", "late", "morning", "evening", "noon", "midnight", "dawn", "dusk", "past",
        "present", "future", "before", "after", "yesterday", "today", "tomorrow", "next", "previous", "soon",
        "instant", "era", "age", "decade", "century", "millennium",
        "moment", "pause", "wait", "begin", "start", "end", "finish", "stop", "continue",
        "forever", "constant", "frequent",
        "occasion", "season", "spring", "summer", "autumn", "fall", "winter", "anniversary", "deadline", "schedule",
        "calendar", "clock", "duration", "interval", "epoch", "generation", "period", "cycle", "timespan",
        "shift", "quarter", "term", "phase", "lifetime", "century", "minute", "timeline", "delay",
        "prompt", "timely", "recurrent", "daily", "weekly", "monthly", "yearly", "annual", "biweekly", "timeframe"),
    "Calendar": (
        "day", "night", "week", "month", "year", "hour", "minute", "second",
        "morning", "evening", "noon", "midnight", "dawn", "dusk",
        "yesterday", "today", "tomorrow",
        "decade", "century", "millennium",
        "season", "spring", "summer", "autumn", "fall", "winter",
        "calendar", "clock",
        "century", "minute",
        "daily", "weekly", "monthly", "yearly", "annual", "biweekly", "timeframe"),
    "People/Roles": (
        "man", "girl", "boy", "kid", "dad", "mom", "son", "sis", "bro",
        "chief", "priest", "king", "queen", "duke", "lord", "friend", "clerk", "coach",
        "nurse", "doc", "maid", "clown", "guest", "peer",
        "punk", "nerd", "jock", "chief"),
    "Nature": (
        "tree", "grass", "stone", "rock", "cliff", "hill",
        "dirt", "sand", "mud", "wind", "storm", "rain", "cloud", "sun",
        "moon", "leaf", "branch", "twig", "root", "bark", "seed",
        "tide", "lake", "pond", "creek", "sea", "wood", "field",
        "shore", "snow", "ice", "flame", "fire", "fog", "dew", "hail",
        "sky", "earth", "glade", "cave", "peak", "ridge", "dust", "air",
        "mist", "heat"),
    "Emotions": (
        "joy", "glee", "pride", "grief", "fear", "hope", "love", "hate", "pain", "shame",
        "bliss", "rage", "calm", "shock", "dread", "guilt", "peace", "trust", "scorn", "doubt",
        "hurt", "wrath", "laugh", "cry", "smile", "frown", "gasp", "blush", "sigh", "grin",
        "woe", "spite", "envy", "glow", "thrill", "mirth", "bored", "cheer", "charm", "grace",
        "shy", "brave", "proud", "glad", "mad", "sad", "tense", "free", "kind"),
    "MonthNames": ("January", "February", "March", "April", "May", "June", "July", "August", "September",
                   "October", "November", "December"),
    "Countries": ("USA", "Canada", "Brazil", "Mexico", "Germany", "France", "Italy", "Spain", "UK", "Australia",
                  "China", "Japan", "India", "Russia", "Korea", "Argentina", "Egypt", "Iran", "Turkey"),
    "Biology": ("gene", "DNA", "RNA", "virus", "bacteria", "fungus",
                "brain", "lung", "blood", "bone", "skin", "muscle", "nerve", "vein", "organ",
                "evolve", "enzyme", "protein", "lipid", "membrane", "antibody", "antigen",
                "ligand", "substrate", "receptor", "cell", "chromosome", "nucleus", "cytoplasm"),
}


def zoo_groups() -> dict[str, tuple[str, ...]]:
    from sae_core.models import corpus as C

    return {"numbers": tuple(C.DIGITS), "number words": tuple(C.NUMBER_WORDS), "months": tuple(C.MONTHS),
            "days": tuple(C.DAYS), "letters": tuple(C.LETTERS), "animals": tuple(C.ANIMALS),
            "feelings": tuple(C.FEELINGS), "family": tuple(C.FRIENDS),
            "harmful verbs": tuple(sorted({v for v, _ in C.HARMFUL_ACTIONS}))}


def check_groups(groups, where: str = "keyword groups") -> dict[str, tuple[str, ...]]:
    """``groups`` as ``{name: (word, ...)}``, or a clear error saying what is wrong."""
    example = '{"months": ["January", "February"], "feelings": ["happy", "sad"]}'
    if not isinstance(groups, dict) or not groups:
        raise UniversalityError(f"{where}: give a JSON object of group names to lists of words, such as {example}")
    out = {}
    for name, words in groups.items():
        if not isinstance(words, (list, tuple)) or not words or not all(isinstance(w, str) and w.strip()
                                                                          for w in words):
            raise UniversalityError(f"{where}: group {name!r} must be a non-empty list of words (strings), "
                                    f"not {words!r}; for example {example}")
        out[str(name)] = tuple(w.strip() for w in words)
    return out


def read_groups(path: str | Path) -> dict[str, tuple[str, ...]]:
    """A user's keyword groups from a JSON file (module doc)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UniversalityError(f"no keyword-group file at {p}; give a JSON file such as "
                                '{"months": ["January", "February"]}') from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UniversalityError(f"{p} is not JSON ({e}); give an object of group names to lists of words") from None
    return check_groups(data, str(p))


def vocabulary_hits(groups: dict[str, tuple[str, ...]], tokenizer) -> dict[str, list[str]]:
    """Per group, its words (distinct, in order) that ``tokenizer`` spells as one word (module doc)."""
    reader = TokenWords(tokenizer)
    spelled: dict[str, bool] = {}  # the paper's groups share many words
    for w in (w for words in groups.values() for w in words):
        if w not in spelled:
            spelled[w] = reader.spells(w)
    return {name: [w for w in dict.fromkeys(words) if spelled[w]] for name, words in groups.items()}
