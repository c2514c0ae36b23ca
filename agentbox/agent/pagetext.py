"""The readable text of an HTML page, in time linear in its length, whatever the page holds.

Why not html.parser: on Python 3.11 its time grows with the square of unclosed constructs
("<a " ten thousand times, 32 kB, took 14 s of CPU), and a fetched page is hostile input. Here
each step moves forward with str.find, so no character is looked at more than a few times.
"""

from __future__ import annotations

import html
import re

SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
BREAK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section"})
# A tag starts with "<", an optional "/", then a letter; any other "<" is text ("a < b").
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)")
_CLOSE = {name: re.compile(f"</{name}", re.IGNORECASE) for name in SKIP}


def _data(parts: list[str], text: str) -> None:
    if text:  # a line break in HTML text is a space; tags make the lines
        parts.append(html.unescape(text).replace("\r", " ").replace("\n", " "))


def _after(text: str, needle: str, start: int) -> int:
    """The index just past `needle` at or after `start`, or the end of `text`."""
    at = text.find(needle, start)
    return len(text) if at == -1 else at + len(needle)


def _skip_to_close(text: str, name: str, start: int) -> int:
    """Past the end tag of a skipped element (its content is not text), or the end."""
    found = _CLOSE[name].search(text, start)
    return len(text) if found is None else _after(text, ">", found.end())


def readable(text: str, content_type: str) -> str:
    """HTML reduced to its text (fewer tokens for the model to pay for); other types as is."""
    if "html" not in content_type.lower():
        return text
    parts: list[str] = []
    i = 0
    while i < len(text):
        lt = text.find("<", i)
        if lt == -1:
            _data(parts, text[i:])
            break
        if text.startswith("<!--", lt):
            _data(parts, text[i:lt])
            i = _after(text, "-->", lt + 4)
            continue
        tag = _TAG.match(text, lt)
        if tag is None and not text.startswith(("<!", "<?"), lt):
            _data(parts, text[i : lt + 1])
            i = lt + 1
            continue
        _data(parts, text[i:lt])
        end = _after(text, ">", lt + 1)
        i = end
        if tag is None:  # a doctype or processing instruction
            continue
        closing, name = tag.group(1), tag.group(2).lower()
        if not closing and name in SKIP and not text.endswith("/>", 0, end):
            i = _skip_to_close(text, name, end)
        elif not closing and name in BREAK:
            parts.append("\n")
    lines = (" ".join(line.split()) for line in "".join(parts).splitlines())
    return "\n".join(line for line in lines if line)
