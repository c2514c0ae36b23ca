"""What every model backend offers: one async method, capabilities as attributes, typed failures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol


class Failure(StrEnum):
    retryable = "retryable"  # 408/409/429 with retry-after, 5xx, 529, timeouts, resets
    quota = "quota"  # spend limit or daily quota: open the circuit until it resets
    auth = "auth"  # 401/403: the key is bad; never retried
    bad_request = "bad_request"  # 400: the task itself is wrong; fail it
    unavailable = "unavailable"  # not configured or cannot start (e.g. the model file is broken)
    budget = "budget"  # a spend cap would be crossed


class ProviderError(Exception):
    """A classified failure; the message is safe to show (never a key or a full request).

    `until` is when a quota resets (epoch seconds); `partial` is what a cut-off stream had
    already used, which is billed all the same; `hold` asks to wait without using an attempt;
    `code` names the task error when the failure class alone does not say it; `usage` is
    what the failed attempt spent (result shape), for its result.
    """

    def __init__(
        self,
        failure: Failure,
        message: str,
        *,
        retry_after: float | None = None,
        until: float | None = None,
        partial: Completion | None = None,
        hold: bool = False,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.retry_after = retry_after
        self.until = until
        self.partial = partial
        self.hold = hold  # nothing was tried: wait without using up an attempt
        self.code = code
        self.usage: dict[str, Any] | None = None


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, what it does, a JSON Schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """The model asks for one tool call; `id` ties the result message back to it."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Request:
    """Messages use one neutral shape that each provider maps to its own wire format:
    system/user `{"role", "content"}`; assistant may add `"tool_calls": [{"id", "name",
    "arguments"}]`; a tool result is `{"role": "tool", "tool_call_id", "name", "content"}`."""

    messages: list[dict[str, Any]]
    max_tokens: int
    model: str = ""
    json_schema: dict[str, Any] | None = None
    tools: tuple[Tool, ...] = ()


@dataclass(frozen=True)
class Completion:
    """One answer and its usage in our terms: input_tokens excludes cache reads and writes."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    finish_reason: str = "stop"
    cached_tokens: int = 0  # prompt tokens read from the provider's cache
    cache_write_tokens: int = 0  # prompt tokens written to it (Anthropic bills these extra)
    reasoning_tokens: int = 0  # included in output_tokens
    estimated: bool = False  # token counts guessed (no usage from the server)
    tool_calls: tuple[ToolCall, ...] = ()  # finish_reason is "tool_calls" when there are any
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Counted:
    """What the local model counts: the chat as its template renders it, that prompt's
    tokens, and the tokens of each text asked about."""

    prompt: str | None
    prompt_tokens: int | None
    text_tokens: list[int]


class LocalCounter(Protocol):
    async def count(self, messages: list[dict[str, Any]], texts: list[str]) -> Counted | None:
        """Counts from the local model, or None when it cannot count right now."""
        ...


# Gets {"output_tokens": n} at the first piece of output (n = 1: the runner times the first
# token with it and keeps it to itself) and then every 32 pieces.
Progress = Callable[[dict[str, Any]], Awaitable[None]]


class Provider(Protocol):
    """A model backend. Providers do no retries of their own: the router owns that loop."""

    kind: ClassVar[str]
    calls_tools: ClassVar[bool]  # its API takes tool definitions and answers with tool calls
    name: str

    async def complete(self, request: Request, progress: Progress | None = None) -> Completion:
        """Run one completion or raise ProviderError."""
        ...

    async def close(self) -> None:
        """Release connections and child processes."""
        ...


class CloudProvider(Provider, Protocol):
    """A provider reached over HTTP with a key."""

    model: str
    heavy_model: str

    async def list_models(self) -> list[str]:
        """The provider's cheapest authenticated call; raises ProviderError."""
        ...
