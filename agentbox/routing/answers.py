"""What the runner measures of a request and judges of an answer: the input tokens a call
may bill (its reservation), the schema check, a local answer that looks unsure, a result's usage."""

from __future__ import annotations

import json
from typing import Any

from agentbox import jsonstrict
from agentbox.providers.base import Completion, Request
from agentbox.vocabulary import TaskSpec

UNSURE = (
    "i don't know",
    "i do not know",
    "i'm not sure",
    "i am not sure",
    "cannot answer",
    "can't answer",
    "as an ai",
)
FRAMING_TOKENS = 8  # per message: role and separator tokens
# The system prompt a provider adds for tools or a schema (Anthropic documents 313 to 346).
TOOL_PREAMBLE_TOKENS = 512


def input_bound(request: Request) -> int:
    """The most input tokens a provider can bill for a request: the tokenizers of every
    supported API make no token of less than one byte (UTF-8), so bytes plus framing bound
    their own count, whatever the text. (A bytes/3 guess let a provider bill 90 % past a cap.)"""
    total = 16
    for m in request.messages:
        total += len(json.dumps(m, ensure_ascii=False).encode()) + FRAMING_TOKENS
    for t in request.tools:
        total += len(json.dumps([t.name, t.description, t.parameters], ensure_ascii=False).encode())
    if request.json_schema is not None:
        total += len(json.dumps(request.json_schema, ensure_ascii=False).encode())
    if request.tools or request.json_schema is not None:
        total += TOOL_PREAMBLE_TOKENS
    return total


def check_output(spec: TaskSpec, c: Completion) -> tuple[Any, str | None]:
    """(parsed data, problem) for a completion against the task's schema."""
    if spec.json_schema is None:
        return None, None
    try:
        data = jsonstrict.loads(c.text)  # NaN in a result's data would make it unreadable
    except ValueError:
        cut = " (cut at max_tokens)" if c.finish_reason == "length" else ""
        return None, f"is not valid JSON{cut}"
    import jsonschema  # noqa: PLC0415 (only schema tasks pay for the import)

    try:
        jsonschema.validate(data, spec.json_schema)
    except jsonschema.ValidationError as exc:
        return data, f"does not match the schema: {exc.message[:200]}"
    return data, None


def unsure(c: Completion, below: float) -> str | None:
    """Why a local answer looks unsure (empty, hedging words, low mean token log-probability),
    or None when it looks fine."""
    text = c.text.strip().lower()
    if not text:
        return "is empty"
    if any(p in text for p in UNSURE):
        return "looks unsure (hedging words)"
    mean = c.extra.get("mean_logprob")
    if isinstance(mean, int | float) and mean < below:
        return f"looks unsure (mean token log-probability {mean:.2f} < {below:g})"
    return None


def usage(calls: list[Completion], cost: float, estimated: bool = False) -> dict[str, Any]:
    """A result's usage: the calls' tokens and what they cost together."""
    return {
        "input_tokens": sum(c.input_tokens for c in calls),
        "output_tokens": sum(c.output_tokens for c in calls),
        "cached_tokens": sum(c.cached_tokens for c in calls),
        "reasoning_tokens": sum(c.reasoning_tokens for c in calls),
        "cost_usd": round(cost, 8),
        "estimated": estimated or any(c.estimated for c in calls),
    }
