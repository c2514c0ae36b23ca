"""What the router's model sees of a prompt: hashed word and character n-grams plus a few named
structural features (length, code, math, asked output size, sub-tasks, domain words)."""

from __future__ import annotations

import itertools
import math
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

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

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
_CODE = re.compile(
    r"```|^\s*(?:def|class|async def) \w+.*:\s*$|^\s*(?:import|from) [\w.]+|#include\b"
    r"|\bfunction\s+\w+\s*\(|\) \{\s*$|^\s*return\b.*[)\]\w]\s*$|^\s*>>> |=>"
    r"|\bselect\b[^.]{1,80}\bfrom\b\s+\w+",
    re.MULTILINE | re.IGNORECASE,
)
_ARITH = re.compile(r"\d\s*[-+*/^=<>%]\s*\d")
_MATH = re.compile(
    r"\b(?:solve|equation|probability|integer|prime|derivative|integral|sum of|how many"
    r"|how long|how much|percent|ratio|average|calculate|compute|formula)\b"
)
_LONG = re.compile(
    r"\b(?:write|writing|draft|compose|create|produce|prepare|generate|revise|polish|rewrite"
    r"|help me|outline)\b[^.?!\n]{0,60}?"
    r"\b(?:essay|article|story|report|outline|proposal|plan|specification|spec|tutorial|paper"
    r"|chapter|speech|script|manual|guide|post|letter|review|program|application|app|module"
    r"|library|implementation|service|document|analysis|summary of|book|thesis|strategy|memo"
    r"|briefing|brief|copy|play|novel|poem|lyrics|presentation|slides|statement|release|plan"
    r"|campaign|curriculum|syllabus|lesson|contract|policy|agreement|application)\b"
    r"|\b(?:in depth|in-depth|in detail|detailed|thorough|comprehensive|long-form)"
    r"\b|\b(?:design|implement|architect|develop|build)\b"
    r"|\b(?:entire|whole)\b|\d[\d,.]*[\s-]*(?:words?|pages?|slides|sections|chapters)\b"
)
_SHORT = re.compile(
    r"\b(?:one word|single word|a word|only the|only with|yes or no|true or false|in one sentence"
    r"|concise|no explanation|do not explain|answer with|reply only|respond only|just the"
    r"|one line|label|classify|categori[sz]e|extract|identify|detect|translate|tag|which of)\b"
)
_REASON = re.compile(
    r"\b(?:step by step|step-by-step|show (?:your|the) (?:work|reasoning|steps)|reasoning|prove"
    r"|derive|puzzle|deduce|analy[sz]e|evaluate|compare|trade-offs?|justify|why)\b"
)
_QUESTION = re.compile(
    r"\s*(?:what|who|whom|whose|when|where|which|why|how|do|does|did|is|are|was|were|can|could"
    r"|will|would|should|have|has|tell me)\b"
)
_SUBTASK = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+\S|\band then\b|\bthen\b", re.MULTILINE)


@dataclass(frozen=True)
class Features:
    """A sparse vector (index -> value) and, for each index, what it stands for."""

    values: dict[int, float]
    names: dict[int, str]


def stable_hash(text: str) -> int:
    """The same bucket on every machine and run (str hashes are salted per process)."""
    return zlib.crc32(text.encode()) % BUCKETS


@lru_cache(maxsize=20000)
def _word_grams(word: str) -> tuple[tuple[int, str], ...]:
    """A word's own bucket and those of its character 4-grams (with word edges), cached:
    words repeat across prompts, and hashing is most of a decision's cost."""
    grams = [(stable_hash("w:" + word), word)]
    padded = f"<{word}>"
    if len(padded) > 4:
        grams += [
            (stable_hash("c:" + padded[i : i + 4]), padded[i : i + 4])
            for i in range(len(padded) - 3)
        ]
    return tuple(grams)


def _clip(x: float) -> float:
    return min(x, 1.0)


def ask(lower: str) -> str:
    """The part of a prompt that says what it wants: its start and its end."""
    if len(lower) <= ASK_HEAD + ASK_TAIL:
        return lower
    return lower[:ASK_HEAD] + " " + lower[-ASK_TAIL:]


def named(text: str, lower: str) -> list[float]:
    """The structural features, each scaled to 0..1, in the order of NAMED."""
    wanted = ask(lower)
    plain = len(text) < 200 and bool(_QUESTION.match(lower) or lower.rstrip().endswith("?"))
    return [
        _clip(math.log1p(len(text)) / math.log1p(20000)),
        _clip(len(_CODE.findall(text)) / 2),
        _clip((len(_ARITH.findall(lower)) + len(_MATH.findall(wanted))) / 4),
        _clip(len(_LONG.findall(wanted)) / 2),
        _clip(len(_SHORT.findall(wanted)) / 2),
        _clip(len(_REASON.findall(wanted)) / 2),
        1.0 if plain else 0.0,
        _clip(len(_SUBTASK.findall(wanted)) / 4),
        _clip(sum(s in wanted for s in HEAVY) / 3),
        _clip(sum(s in wanted for s in LIGHT) / 3),
    ]


def featurize(text: str) -> Features:
    """Binary n-gram presence scaled to unit length, then the named features."""
    lower = text.lower()
    words = _WORD.findall(ask(lower))
    names: dict[int, str] = {}
    for w in words:
        for index, gram in _word_grams(w):
            names.setdefault(index, gram)
    for a, b in itertools.pairwise(words):
        gram = f"{a} {b}"
        names.setdefault(stable_hash("b:" + gram), gram)
    scale = 1 / math.sqrt(len(names)) if names else 0.0
    values = dict.fromkeys(names, scale)
    for i, v in enumerate(named(text, lower)):
        if v:
            values[BUCKETS + i] = v
            names[BUCKETS + i] = NAMED[i]
    return Features(values, names)
