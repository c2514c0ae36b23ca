"""What the router's model sees of a prompt: hashed word and character n-grams plus a few named
structural features (length, code, math, asked output size, sub-tasks, domain words)."""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

from agentbox.routing import phrases
from agentbox.routing.heuristics import HEAVY, LIGHT

BUCKETS = 1 << 13  # hashed n-gram slots; the named features sit after them
NAMED = (
    "length",
    "code",
    "math",
    "long output asked",
    "short output asked",
    "reasoning asked",
    "plain question",
    "sub-tasks",
    "heavy words",
    "light words",
)
WIDTH = BUCKETS + len(NAMED)
ASK_HEAD, ASK_TAIL = 250, 150  # where a prompt says what it wants, around any pasted text
# Code and arithmetic are looked for in this much of a prompt's start and end: it bounds the
# time of a decision (under 1 ms) whatever the prompt's size.
SCAN_HEAD, SCAN_TAIL = 1200, 400

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
_CODE = re.compile(
    r"```|^[ \t]*(?:def|class|async def) \w+[^\n]*:[ \t]*$|^[ \t]*(?:import|from) [\w.]+"
    r"|#include\b|\bfunction[ \t]+\w+[ \t]*\(|\) \{[ \t]*$|^[ \t]*return\b[^\n]*[)\]\w][ \t]*$"
    r"|^[ \t]*>>> |=>|\b(?i:select)\b[^.\n]{1,80}\b(?i:from)[ \t]+\w+",
    re.MULTILINE,
)
_ARITH = re.compile(r"\d\s*[-+*/^=<>%]\s*\d")
# Cheap tests before the code pattern: most prompts have none of these and skip it.
_CODE_HINTS = (
    "```",
    "def ",
    "class ",
    "import ",
    "#include",
    "function",
    ") {",
    "return",
    ">>>",
    "=>",
    "select",
)
_BULLET = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+\S", re.MULTILINE)


@dataclass(frozen=True)
class Features:
    """A sparse vector (index -> value) and, for each index, what it stands for."""

    values: dict[int, float]
    names: dict[int, str]
    grams: tuple[int, ...] = ()  # the n-gram slots among values, each of value `scale`
    scale: float = 0.0


def stable_hash(text: str) -> int:
    """The same bucket on every machine and run (str hashes are salted per process)."""
    return zlib.crc32(text.encode()) % BUCKETS


@lru_cache(maxsize=20000)
def _word_grams(word: str) -> dict[int, str]:
    """A word's own bucket and those of its character 4-grams (with word edges), cached:
    words repeat across prompts, and hashing is most of a decision's cost."""
    grams = {stable_hash("w:" + word): word}
    padded = f"<{word}>"
    if len(padded) > 4:
        for q in (padded[i : i + 4] for i in range(len(padded) - 3)):
            grams.setdefault(stable_hash("c:" + q), q)
    return grams


@lru_cache(maxsize=50000)
def _pair(a: str, b: str) -> tuple[int, str]:
    gram = f"{a} {b}"
    return stable_hash("b:" + gram), gram


def _clip(x: float) -> float:
    return min(x, 1.0)


def ask(lower: str) -> str:
    """The part of a prompt that says what it wants: its start and its end."""
    return ends(lower, ASK_HEAD, ASK_TAIL)


def ends(text: str, head: int, tail: int) -> str:
    return text if len(text) <= head + tail else text[:head] + "\n" + text[-tail:]


def named(text: str, scanned: str, low: str, words: list[str]) -> list[float]:
    """The structural features, each scaled to 0..1, in the order of NAMED: `scanned` is the
    prompt's start and end, `low` the same in lower case, `words` the tokens of its ask."""
    wanted = ask(low)
    tokens = [w for w in words if w.isalnum()]
    found, made = phrases.count(tokens)
    question = (bool(tokens) and tokens[0] in phrases.QUESTION) or low.rstrip().endswith("?")
    code = len(_CODE.findall(scanned)) if any(h in low for h in _CODE_HINTS) else 0
    return [
        _clip(math.log1p(len(text)) / math.log1p(20000)),
        _clip(code / 2),
        _clip((len(_ARITH.findall(scanned)) + found[phrases.MATH]) / 4),
        _clip((made + found[phrases.LONG]) / 2),
        _clip(found[phrases.SHORT] / 2),
        _clip(found[phrases.REASON] / 2),
        1.0 if len(text) < 200 and question else 0.0,
        _clip((len(_BULLET.findall(wanted)) + found[phrases.THEN]) / 4),
        _clip(sum(s in wanted for s in HEAVY) / 3),
        _clip(sum(s in wanted for s in LIGHT) / 3),
    ]


def featurize(text: str) -> Features:
    """Binary n-gram presence scaled to unit length, then the named features."""
    scanned = ends(text, SCAN_HEAD, SCAN_TAIL)  # all a decision reads of a long prompt
    low = scanned.lower()
    words = _WORD.findall(ask(low))
    names: dict[int, str] = {}
    for w in words:
        names.update(_word_grams(w))
    names.update(map(_pair, words, words[1:]))
    grams = tuple(names)
    scale = 1 / math.sqrt(len(grams)) if grams else 0.0
    values = dict.fromkeys(grams, scale)
    for i, v in enumerate(named(text, scanned, low, words)):
        if v:
            values[BUCKETS + i] = v
            names[BUCKETS + i] = NAMED[i]
    return Features(values, names, grams, scale)
