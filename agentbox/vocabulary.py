"""The shared vocabulary: task spec, route, states, error codes, usage entries.

It imports nothing of ours, so every layer (tasks, routing, MQTT, the control socket) can use
it without pulling in another. The shapes are those of docs/reference.md.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


class State(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    rejected = "rejected"
    expired = "expired"
    cancelled = "cancelled"


FINAL_STATES = frozenset(
    {State.succeeded, State.failed, State.rejected, State.expired, State.cancelled}
)


class ErrorCode(StrEnum):
    invalid_request = "invalid_request"
    payload_too_large = "payload_too_large"
    budget_exceeded = "budget_exceeded"
    provider_unavailable = "provider_unavailable"
    provider_auth = "provider_auth"
    provider_error = "provider_error"
    deadline = "deadline"
    cancelled = "cancelled"
    store_unavailable = "store_unavailable"
    not_found = "not_found"
    step_limit = "step_limit"  # an agent task used its steps without a final answer
    missed_run = "missed_run"  # a scheduled run whose time passed while the box could not run it
    internal = "internal"
    busy = "busy"  # refused at intake while the box holds all it may: not run, send it again


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=1_000_000)


class TaskSpec(BaseModel):
    """What a client asks for. Unknown fields, out-of-range values and wrong types are refused
    (strict: "100" is not a number of tokens, true is not a priority)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, strict=True)

    id: str | None = Field(default=None, pattern=ID_PATTERN)
    prompt: str | None = Field(default=None, min_length=1, max_length=1_000_000)
    messages: list[Message] | None = Field(default=None, min_length=1, max_length=500)
    kind: Literal["complete", "agent"] = "complete"
    tier: Literal["auto", "local", "cloud"] = "auto"
    model: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}/\S{1,200}$")
    max_tokens: int = Field(default=512, ge=1, le=32768)
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    tools: list[str] = Field(default_factory=list, max_length=32)
    priority: int = Field(default=5, ge=0, le=9)
    deadline_s: float = Field(default=3600, gt=0, le=7 * 86400)
    max_cost_usd: float | None = Field(default=None, ge=0)
    reply_to: str | None = Field(default=None, min_length=1, max_length=1024)
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if self.reply_to is not None and any(c in self.reply_to for c in "#+\0"):
            raise ValueError("reply_to must be a topic name without wildcards")
        return self

    def chat(self) -> list[dict[str, str]]:
        """The conversation as role/content dicts."""
        if self.messages is not None:
            return [m.model_dump() for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]

    def text(self) -> str:
        return "\n".join(m["content"] for m in self.chat())

    def with_id(self) -> TaskSpec:
        """The spec with an id: the client's idempotency key or a new random one."""
        if self.id:
            return self
        return self.model_copy(update={"id": uuid.uuid4().hex[:24]})

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


class Route(BaseModel):
    tier: Literal["local", "cloud"]
    provider: str
    model: str
    reason: str


class SpecError(Exception):
    """A spec that was refused at intake; `code` is one of ErrorCode."""

    def __init__(self, code: ErrorCode, message: str, task_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.task_id = task_id


@dataclass(frozen=True)
class UsageEntry:
    """One billed call, as the ledger keeps it."""

    at: float
    task_id: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    cost_usd: float
    estimated: bool
    call: str = ""  # the call's id: its in-flight row is settled in place by it
    in_flight: bool = False  # written before the request left: its worst case, until settled
