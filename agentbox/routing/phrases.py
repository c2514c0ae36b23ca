"""The wording the router's named features count, as words and phrases looked up per token
(a set lookup per word is many times faster than a regular expression per feature)."""

from __future__ import annotations

from collections import Counter

MATH = "math"
MAKE = "make"  # a verb of making; the long things after it count as "long output asked"
THING = "thing"  # something long to make: an essay, a report, a program
LONG = "long"
WORD_UNIT = "word unit"  # after a number, an answer's size in words
SMALL_UNIT = "small unit"  # sentences, lines: after a number, an answer's size
BIG_UNIT = "big unit"  # paragraphs, pages, ...: after a number, a long answer
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
    # An asked size reads the same in the languages an owner is likely to write in (English,
    # German, French, Spanish, Italian, Portuguese, Dutch), though the corpus is English.
    WORD_UNIT: "word words wort worte wörter wörtern mot mots palabra palabras parola parole"
    " palavra palavras woord woorden",
    SMALL_UNIT: "sentence sentences line lines bullet bullets satz sätze sätzen zeile zeilen"
    " phrase phrases ligne lignes frase frases frasi oración oraciones zin zinnen",
    BIG_UNIT: "page pages slide slides section sections chapter chapters paragraph paragraphs"
    " seite seiten absatz absätze absätzen kapitel paragraphe paragraphes chapitre chapitres"
    " página páginas párrafo párrafos capítulo capítulos pagina pagine paragrafo paragrafi"
    " capitolo capitoli alinea alineas hoofdstuk hoofdstukken",
    SHORT: "concise label classify categorize categorise extract identify detect translate tag"
    " briefly concisely headline keywords"
    " | one word | single word | a word | only the | only with | answer with | reply only"
    " | respond only | just the | one line | which of | no explanation | yes or no"
    " | true or false | in one sentence | do not explain | one sentence | a sentence"
    " | single sentence | two sentences | a few words | subject line | output only | return only"
    " | only output | only return | only contain | only respond | only answer",
    REASON: "reasoning prove derive puzzle deduce analyze analyse evaluate compare justify why"
    " | step by step | trade off | trade offs | show your work | show your reasoning"
    " | show your steps | show the steps",
    THEN: "then",
}
WORDS: dict[str, str] = {}
PHRASES: dict[tuple[str, ...], str] = {}
# Each entry: words, then "|"-separated phrases of two to four words.
for _kind, _text in _TABLE.items():
    _plain, *_phrases = _text.split("|")
    for _w in _plain.split():
        WORDS.setdefault(_w, _kind)
    for _entry in _phrases:
        PHRASES[tuple(_entry.split())] = _kind
STARTS = {p[0] for p in PHRASES}
_QUESTION_WORDS = (
    "what who whom whose when where which why how do does did is are was were can could will"
    " would should have has tell"
)
QUESTION = frozenset(_QUESTION_WORDS.split())
NUMBER_WORDS = "zero one two three four five six seven eight nine ten"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# The first word of a sentence that asks for mechanical work on given text, and one that asks
# for work a small model does badly: what an instruction asks, whatever text it carries.
LIGHT_ASKS = _words(
    "summarize summarise classify categorize categorise extract translate identify label tag"
    " triage proofread correct fix rate rephrase paraphrase shorten list name give return"
    " find detect choose select pick answer reply respond convert format count spell tell"
    " determine decide is does"
)
HEAVY_ASKS = _words(
    "implement design prove derive develop build create write compose draft analyze analyse"
    " explain compare plan architect evaluate solve optimize optimise refactor debug discuss"
    " describe elaborate critique propose construct calculate compute"
)
NUMBERS = {w: i for i, w in enumerate(NUMBER_WORDS.split())}
SMALL_SIZE = 60  # words: up to this many asked for is a short answer
BIG_SIZE = 200  # words: from this many on, a long one


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
            number = int(t[:6]) if t.isdigit() and t.isascii() else NUMBERS.get(t)
            if number is not None and i + 1 < n:
                asked = _size(number, WORDS.get(tokens[i + 1]))
                if asked:
                    found[asked] += 1
            continue
        found[kind] += 1
        if kind == MAKE:
            making = True
        elif kind == THING and making:
            made += 1
    return found, made


def _size(number: int, unit: str | None) -> str | None:
    """What "N unit" says of an answer's size: short, long, or nothing."""
    if unit == BIG_UNIT:
        return LONG if number > 1 else None
    if unit == WORD_UNIT:
        return SHORT if number <= SMALL_SIZE else LONG if number >= BIG_SIZE else None
    if unit != SMALL_UNIT:
        return None
    return SHORT if number <= 3 else LONG if number >= 10 else None
