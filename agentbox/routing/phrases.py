"""The wording the router's named features count, as words and phrases looked up per token
(a set lookup per word is many times faster than a regular expression per feature)."""

from __future__ import annotations

from collections import Counter

MATH = "math"
MAKE = "make"  # a verb of making; the long things after it count as "long output asked"
THING = "thing"  # something long to make: an essay, a report, a program
LONG = "long"
UNIT = "unit"  # words, pages, ...: after a number, a length asked for
SHORT = "short"
REASON = "reason"
THEN = "then"

_TABLE = {
    MATH: "solve equation equations probability integer integers prime primes derivative"
    " integral percent percentage ratio average calculate compute formula | sum of | how many"
    " | how long | how much",
    MAKE: "write writing draft compose create produce prepare generate revise polish rewrite"
    " outline | help me",
    THING: "essay article story report outline proposal plan specification spec tutorial paper"
    " chapter speech script manual guide post letter review program application app module"
    " library implementation service document analysis book thesis strategy memo briefing"
    " brief copy play novel poem lyrics presentation slides statement release campaign"
    " curriculum syllabus lesson contract policy agreement | summary of",
    LONG: "detailed thorough comprehensive design implement architect develop build entire"
    " whole | in depth | in detail | long form",
    UNIT: "word words page pages slide slides section sections chapter chapters",
    SHORT: "concise label classify categorize categorise extract identify detect translate tag"
    " | one word | single word | a word | only the | only with | answer with | reply only"
    " | respond only | just the | one line | which of | no explanation | yes or no"
    " | true or false | in one sentence | do not explain",
    REASON: "reasoning prove derive puzzle deduce analyze analyse evaluate compare justify why"
    " | step by step | trade off | trade offs | show your work | show your reasoning"
    " | show your steps | show the steps",
    THEN: "then",
}
WORDS: dict[str, str] = {}
PHRASES: dict[tuple[str, ...], str] = {}
for _kind, _text in _TABLE.items():
    for _entry in _text.split("|"):
        _parts = tuple(_entry.split())
        if len(_parts) == 1:
            for _w in _parts:
                WORDS.setdefault(_w, _kind)
        else:
            PHRASES[_parts] = _kind
STARTS = {p[0] for p in PHRASES}
_QUESTION_WORDS = (
    "what who whom whose when where which why how do does did is are was were can could will"
    " would should have has tell"
)
QUESTION = frozenset(_QUESTION_WORDS.split())


def count(tokens: list[str]) -> tuple[Counter[str], int]:
    """How often each kind of wording occurs in the (alphanumeric, lowercase) tokens, and the
    count of long things asked to be made (those after the first verb of making)."""
    found: Counter[str] = Counter()
    made = 0
    making = False
    n = len(tokens)
    for i, t in enumerate(tokens):
        kind = WORDS.get(t)
        if t in STARTS:
            for size in (2, 3, 4):
                if i + size <= n and (phrase := PHRASES.get(tuple(tokens[i : i + size]))):
                    kind = phrase
                    break
        if kind is None:
            if t.isdigit() and i + 1 < n and WORDS.get(tokens[i + 1]) == UNIT:
                found[LONG] += 1
            continue
        found[kind] += 1
        if kind == MAKE:
            making = True
        elif kind == THING and making:
            made += 1
    return found, made
