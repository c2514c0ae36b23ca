"""JSON as RFC 8259 has it: no NaN or Infinity in what the box reads or writes.

Python's json module reads and writes bare NaN and Infinity by default; most other parsers
(JavaScript's, Go's, Home Assistant's) refuse them, so one such value would make a result or
an event unreadable to the client it is for.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(text: str | bytes) -> Any:
    """json.loads that refuses NaN and Infinity; ValueError like any other bad JSON."""
    return json.loads(text, parse_constant=_constant)


def dumps(value: Any, **options: Any) -> str:
    """json.dumps that raises ValueError rather than write a non-finite number."""
    return json.dumps(value, allow_nan=False, **options)


def non_finite(value: Any) -> str | None:
    """Where a NaN or infinite number in decoded JSON is ("meta.x[2]"), or None when none is.
    An overflowing literal such as 1e999 decodes to infinity: the loads() check misses it."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:  # a loop, not recursion: a spec may nest deep
        where, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return where or "value"
        if isinstance(item, dict):
            stack += [(f"{where}.{k}" if where else str(k), v) for k, v in item.items()]
        elif isinstance(item, list):
            stack += [(f"{where}[{i}]", v) for i, v in enumerate(item)]
    return None
