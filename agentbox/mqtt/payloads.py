"""Incoming payloads: size, UTF-8, JSON and nesting checked before anything else sees them."""

from __future__ import annotations

import json
import re
from typing import Any

from agentbox.vocabulary import ID_PATTERN, ErrorCode, SpecError

MAX_DEPTH = 32


def decode(payload: bytes, max_bytes: int) -> dict[str, Any]:
    """A request object, or SpecError with the reason (nothing else is touched)."""
    if len(payload) > max_bytes:
        raise SpecError(ErrorCode.payload_too_large, f"{len(payload)} bytes, limit {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(ErrorCode.invalid_request, "payload is not UTF-8") from None
    # Bound nesting before the parser recurses: a deep payload is refused, not a crash.
    if text.count("[") + text.count("{") > MAX_DEPTH and _bracket_depth(text) > MAX_DEPTH:
        raise SpecError(ErrorCode.invalid_request, f"nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise SpecError(ErrorCode.invalid_request, "payload is not JSON") from None
    if not isinstance(data, dict):
        raise SpecError(ErrorCode.invalid_request, "payload must be a JSON object")
    return data


def _bracket_depth(text: str) -> int:
    """Nesting of brackets outside strings, without parsing."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def encode(body: dict[str, Any]) -> bytes:
    """Compact JSON, as every message the box publishes is."""
    return json.dumps(body, separators=(",", ":")).encode()


def id_of(data: dict[str, Any]) -> str | None:
    """The request's task id when it is a valid one."""
    task_id = data.get("id")
    return task_id if isinstance(task_id, str) and re.match(ID_PATTERN, task_id) else None


def rejected(task_id: str | None, code: str, message: str) -> dict[str, Any]:
    """The final answer to a request that is refused."""
    return {"id": task_id, "state": "rejected", "error": {"code": code, "message": message}}


def not_found(task_id: str) -> dict[str, Any]:
    """The answer to task/get or task/cancel naming a task the box does not know (never
    `rejected`, which is a task's state: there is no task)."""
    message = f"no task with id {task_id[:64]!r}"
    return {"id": task_id, "state": "not_found", "error": {"code": "not_found", "message": message}}
