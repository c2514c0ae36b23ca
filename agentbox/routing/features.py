"""What the router's model sees of a prompt: its instruction apart from the text it carries (a
pasted passage, quoted text, a document), the hashed words of the instruction, and named
structural features (the two lengths, code, math, asked output size, sub-tasks, what the
instruction asks for, domain words)."""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from functools import cached_property, lru_cache

from agentbox.routing import phrases
from agentbox.routing.heuristics import HEAVY, LIGHT

BUCKETS = 1 << 13  # hashed word slots; the named features sit after them
NAMED = (
    "instruction length",
    "passage length",
    "code",
    "math",
    "long output asked",
    "short output asked",
    "reasoning asked",
    "plain question",
    "sub-tasks",
    "heavy words",
    "light words",
    "light ask",
    "heavy ask",
    "instruction under 80",
    "instruction 80-200",
    "instruction 200-400",
    "instruction over 400",
)
WIDTH = BUCKETS + len(NAMED)
ASK_HEAD, ASK_TAIL = 250, 150  # the words are of this much of the instruction's ends
# An instruction is the prompt's first block and its last (blocks are split by blank lines),
# each at most this long; the blocks between, quoted text and what follows a "...:" line are
# the passage it works on. A passage says little of how hard the work is, its length a bit.
FIRST_BLOCK, LAST_BLOCK, LAST_LINE = 400, 300, 300
# Quoted text of this many characters or more is passage, the data an instruction works on;
# shorter quotes are labels and answer options ("urgent", 'True'). (40 routed unseen sources
# worse: AUC 0.903 against 0.912, corpus/README.md.)
QUOTED_MIN = 8
TEXT_MIN = 40  # after a "...:" lead-in or a label, a text at least this long is passage
# Code and arithmetic are looked for in this much of a prompt's start and end: it bounds the
# time of a decision (under 1 ms) whatever the prompt's size.
SCAN_HEAD, SCAN_TAIL = 1200, 400

_WORD = re.compile(r"[^\W_]+|[^\w\s]|_")  # words of any script; each other mark alone
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
_BLOCKS = re.compile(r"\n[ \t]*\n")
_QUOTED = re.compile(
    rf'"[^"]{{{QUOTED_MIN},}}?"|“[^”]{{{QUOTED_MIN},}}?”|```.*?(?:```|$)'
    rf"|(?<!\w)'[^'\n]{{{QUOTED_MIN},}}?'(?!\w)",
    re.DOTALL,
)
_LEAD_IN = re.compile(r":[ \t]*\n")  # "Text:" then the text on the lines after it
# "Context: <the text>" at a line's start, the shape of reading and retrieval prompts: what a
# label naming a text to work on is followed by, up to a blank line or the next "Label:"
# line, is passage, wherever the instruction stands. (Such a label within a sentence marks
# a passage less often: tried, it routed unseen sources worse.)
_FIELD = re.compile(
    r"^([ \t]*(?:context|passage|text|article|document|input|e-?mail|message|log|review"
    r"|transcript|abstract|story|paragraph|excerpt|content|narrative|contract|sentence|tweet"
    r"|comment|post|news|ticket|conversation|dialogue|snippet|data|table|record)[ \t]*:)"
    r"([^\n]*(?:\n(?![ \t]*[a-z][\w ]{0,20}:)[^\n]*\S[^\n]*)*)",
    re.MULTILINE | re.IGNORECASE,
)


def _field(m: re.Match[str]) -> str:
    # the label stays, without its colon: a "...:" line would make the rest passage
    return m[1].rstrip(" \t:") if len(m[2].strip()) >= TEXT_MIN else m[0]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_YOU = re.compile(r"\byou(?:r|rs|rself)?\b")
_ASKING = phrases.LIGHT_ASKS | phrases.HEAVY_ASKS | {"please", "now", "then", "also", "make"}
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n\s*)[^a-z\n]{0,3}([a-z]+)")


@dataclass(frozen=True)
class Features:
    """A sparse vector (index -> value) and, for each index, what it stands for."""

    values: dict[int, float]
    names: dict[int, str]
    grams: tuple[int, ...] = ()  # the word slots among values, each of value `scale`
    scale: float = 0.0
    words: tuple[str, ...] = ()  # the instruction's tokens, in order

    @cached_property
    def pairs(self) -> dict[int, str]:
        """The slots of its word pairs, which the shipped model does not read: only the box's
        own corrections do (learned.py), where they tell one kind of prompt from another
        better than words alone. Made on first use: a box that learned nothing never pays."""
        return dict(map(_pair, self.words, self.words[1:]))

    @property
    def pair_scale(self) -> float:
        return 1 / math.sqrt(len(self.pairs)) if self.pairs else 0.0


def stable_hash(text: str) -> int:
    """The same bucket on every machine and run (str hashes are salted per process)."""
    return zlib.crc32(text.encode()) % BUCKETS


@lru_cache(maxsize=50000)
def _word(word: str) -> int:
    """A word's bucket, cached: words repeat across prompts, and hashing is most of a
    decision's cost."""
    return stable_hash("w:" + word)


@lru_cache(maxsize=50000)
def _pair(a: str, b: str) -> tuple[int, str]:
    gram = f"{a} {b}"
    return stable_hash("b:" + gram), gram


def _clip(x: float) -> float:
    return min(x, 1.0)


def ends(text: str, head: int, tail: int) -> str:
    """The first `head` and last `tail` characters of a text longer than both."""
    if len(text) <= head + tail:
        return text
    return text[:head] + "\n" + text[len(text) - tail :]


def split(text: str) -> tuple[str, int]:
    """The instruction of a prompt (of its scanned ends) and the length of the passage it
    carries: what is not instruction."""
    if len(text) <= SCAN_HEAD + SCAN_TAIL:
        scanned = _FIELD.sub(_field, text)
    else:  # a label's text runs on to the cut, not past it
        scanned = (
            _FIELD.sub(_field, text[:SCAN_HEAD]) + "\n" + _FIELD.sub(_field, text[-SCAN_TAIL:])
        )
    blocks = [b for b in _BLOCKS.split(scanned) if b.strip()]
    if not blocks:
        return "", 0
    parts = [ends(_lead_in(blocks[0]), FIRST_BLOCK, 0)]
    # after "...:" the next block is the text; a last block past it may be the question
    if len(blocks) > 2 or (len(blocks) == 2 and not blocks[0].rstrip().endswith(":")):
        last = _question(blocks[-1])
        # a long last block that asks nothing, after a first one that asks, is the text itself
        if len(blocks[-1]) <= LAST_BLOCK or _asking(last) or not _asking(parts[0]):
            parts.append(last)
    instruction = _QUOTED.sub(" ", "\n\n".join(p for p in parts if p))
    return instruction, max(len(text) - len(instruction), 0)


def _asking(text: str) -> bool:
    """Whether a piece of a prompt asks for something: a question, or a sentence that opens
    with a verb of asking ("Summarize", "Write", "Please ...") or speaks to the model."""
    low = text.lower()
    if "?" in low or _YOU.search(low):
        return True
    return any(w in _ASKING for w in _SENTENCE_START.findall(low))


def _lead_in(block: str) -> str:
    """A block up to a "...:" line that the text to work on follows ("Summarize this:\n...")."""
    lead = _LEAD_IN.search(block)
    return block if lead is None or len(block) - lead.end() <= TEXT_MIN else block[: lead.start()]


def _question(block: str) -> str:
    """What a last block asks: all of a short one, else its last line if that is short, else
    the last sentences of that line that fit in LAST_LINE, or the end of one longer sentence
    (a long last block is more often the passage than the question, but a request is often
    appended to a passage's last paragraph: "... Please write a review of it in 800 words.")."""
    if len(block) <= LAST_BLOCK:
        return _lead_in(block)
    line = block.rstrip().rsplit("\n", 1)[-1]
    if len(line) <= LAST_LINE:
        return line
    tail: list[str] = []
    size = 0
    for sentence in reversed(_SENTENCE_END.split(line)):
        size += len(sentence) + 1
        if size > LAST_LINE:
            break
        tail.append(sentence)
    if not tail:  # one long sentence: its end, from a word's start
        return line[len(line) - LAST_LINE :].split(" ", 1)[-1]
    return " ".join(reversed(tail))


def asks(low: str) -> tuple[int, int]:
    """How many sentences of the instruction open with a light ask, and with a heavy one."""
    light = heavy = 0
    for word in _SENTENCE_START.findall(low):
        light += word in phrases.LIGHT_ASKS
        heavy += word in phrases.HEAVY_ASKS
    return light, heavy


def named(scanned: str, low: str, ask: str, passage: int, words: list[str]) -> list[float]:
    """The structural features, each scaled to 0..1, in the order of NAMED: `scanned` is the
    prompt's start and end, `low` the same in lower case, `ask` its instruction in lower case,
    `passage` the length of the text the instruction carries, `words` the instruction's tokens."""
    tokens = [w for w in words if w.isalnum()]
    found, made = phrases.count(tokens)
    question = (bool(tokens) and tokens[0] in phrases.QUESTION) or ask.rstrip().endswith("?")
    code = len(_CODE.findall(scanned)) if any(h in low for h in _CODE_HINTS) else 0
    light, heavy = asks(ask)
    return [
        _clip(math.log1p(len(ask)) / math.log1p(FIRST_BLOCK + LAST_BLOCK)),
        _clip(math.log1p(passage) / math.log1p(20000)),
        _clip(code / 2),
        _clip((len(_ARITH.findall(ask)) + found[phrases.MATH]) / 4),
        _clip((made + found[phrases.LONG]) / 2),
        _clip(found[phrases.SHORT] / 2),
        _clip(found[phrases.REASON] / 2),
        1.0 if len(ask) < 200 and question else 0.0,
        _clip((len(_BULLET.findall(ask)) + found[phrases.THEN] + ask.count("?") // 2) / 4),
        _clip(sum(s in ask for s in HEAVY) / 3),
        _clip(sum(s in ask for s in LIGHT) / 3),
        _clip(light / 2),
        _clip(heavy / 2),
        float(len(ask) < 80),
        float(80 <= len(ask) < 200),
        float(200 <= len(ask) < 400),
        float(len(ask) >= 400),
    ]


def featurize(text: str) -> Features:
    """Binary word presence (of the instruction) scaled to unit length, then the named
    features."""
    scanned = ends(text, SCAN_HEAD, SCAN_TAIL)  # all a decision reads of a long prompt
    low = scanned.lower()
    instruction, passage = split(text)
    ask = instruction.lower()
    words = _WORD.findall(ends(ask, ASK_HEAD, ASK_TAIL))
    # Words alone: word pairs and character 4-grams fitted each source's style and routed
    # prompts of an unseen source worse (corpus/README.md, "What the model reads").
    names = dict(zip(map(_word, words), words, strict=True))
    grams = tuple(names)
    scale = 1 / math.sqrt(len(grams)) if grams else 0.0
    values = dict.fromkeys(grams, scale)
    for i, v in enumerate(named(scanned, low, ask, passage, words)):
        if v:
            values[BUCKETS + i] = v
            names[BUCKETS + i] = NAMED[i]
    return Features(values, names, grams, scale, tuple(words))
