"""What the HTTP providers share: one transport, failure classification, retry-after, SSE."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Any, ClassVar

import httpx

from agentbox import jsonstrict
from agentbox.logs import SCRUBBER
from agentbox.providers import seam
from agentbox.providers.base import Completion, Failure, ProviderError, ToolCall
from agentbox.providers.seam import Reply, Transport
from agentbox.settings import ProviderConfig

RETRY_AFTER_CAP_S = 60.0
QUOTA_UNKNOWN_RESET_S = 3600.0  # look again in an hour when a quota error names no reset time
LIST_TIMEOUT = httpx.Timeout(20.0)  # a model listing (key test) needs no 120 s read timeout


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from retry-after-ms or retry-after (seconds or an HTTP date), capped."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return min(max(float(ms) / 1000, 0.0), RETRY_AFTER_CAP_S)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def error_text(body: Any, fallback: str) -> str:
    """The provider's own short error message, if its body has one, with any known key
    masked: these texts reach task results, health payloads and logs."""
    text = fallback
    if isinstance(body, list) and body:
        body = body[0]
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            text = str(err["message"])
        elif isinstance(err, str):
            text = err
    return SCRUBBER.scrub(text, limit=300)


def classify_status(status: int, headers: Mapping[str, str], body: Any, name: str) -> ProviderError:
    """The common reading of an HTTP failure; providers refine it for their own codes."""
    text = error_text(body, f"HTTP {status}")
    msg = f"{name}: HTTP {status}: {text}"
    wait = retry_after(headers)
    if status in (401, 403):
        return ProviderError(Failure.auth, f"{name}: key rejected (HTTP {status}): {text}")
    if status == 402:
        return ProviderError(Failure.quota, msg, until=time.time() + QUOTA_UNKNOWN_RESET_S)
    if status in (408, 409, 429) or status >= 500:
        return ProviderError(Failure.retryable, msg, retry_after=wait)
    return ProviderError(Failure.bad_request, msg)


def transport_error(exc: httpx.HTTPError, name: str) -> ProviderError:
    """Timeouts, resets and refused connections: all worth another try elsewhere or later."""
    kind = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(Failure.retryable, f"{name}: timed out ({kind})")
    detail = SCRUBBER.scrub(str(exc), limit=200)
    if "CERTIFICATE_VERIFY_FAILED" in detail or "certificate verify failed" in detail:
        return ProviderError(
            Failure.retryable,
            f"{name}: the server's TLS certificate is not trusted ({detail});"
            " check base_url, or the box's clock and CA certificates",
        )
    why = f"{kind}: {detail}" if detail else kind
    return ProviderError(Failure.retryable, f"{name}: connection failed ({why})")


Classifier = Callable[[int, Mapping[str, str], Any], ProviderError]


@asynccontextmanager
async def post_stream(
    client: Transport,
    url: str,
    *,
    headers: dict[str, str],
    payload: dict[str, Any],
    classify: Classifier,
    name: str,
) -> AsyncIterator[Reply]:
    """POST and yield the open response when it is 2xx; otherwise raise the classified error."""
    content = json.dumps(payload).encode()
    headers = {**headers, "content-type": "application/json"}
    try:
        async with seam.stream(client, "POST", url, headers=headers, content=content) as resp:
            if resp.status_code >= 400:
                raw = await resp.aread()
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                raise classify(resp.status_code, resp.headers, body)
            yield resp
    except httpx.HTTPError as exc:
        raise transport_error(exc, name) from None


async def get_json(
    client: Transport,
    url: str,
    *,
    headers: dict[str, str],
    classify: Classifier,
    name: str,
) -> Any:
    try:
        async with seam.stream(client, "GET", url, headers=headers, timeouts=LIST_TIMEOUT) as resp:
            await resp.aread()
    except httpx.HTTPError as exc:
        raise transport_error(exc, name) from None
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    if resp.status_code >= 400:
        raise classify(resp.status_code, resp.headers, body)
    return body


async def lines(resp: Reply) -> AsyncIterator[str]:
    """The body's lines, split on CR, LF or CRLF as SSE allows (httpx's own line reader costs
    several times more per chunk)."""
    rest = b""
    async for chunk in resp.aiter_bytes():
        buf = rest + chunk
        held = buf.endswith(b"\r")  # maybe half of a CRLF: wait for the next chunk
        if held:
            buf = buf[:-1]
        *done, rest = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        if held:
            rest += b"\r"
        for line in done:
            yield line.decode("utf-8", "replace")
    if rest.rstrip(b"\r"):
        yield rest.rstrip(b"\r").decode("utf-8", "replace")


async def sse(resp: Reply) -> AsyncIterator[tuple[str, str]]:
    """Server-sent events as (event, data); data lines of one event are joined by newlines."""
    event, data = "", list[str]()
    async for line in lines(resp):
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", list[str]()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            event = line[6:].strip()
    if data:
        yield event or "message", "\n".join(data)


def estimate_tokens(text: str) -> int:
    """A rough count for when a server reports no usage: about four characters a token."""
    return max(1, (len(text) + 3) // 4) if text else 0


def prompt_estimate(messages: list[dict[str, Any]]) -> int:
    """Input tokens when the server does not say: text plus a few tokens of framing each."""
    return sum(estimate_tokens(message_text(m)) + 4 for m in messages)


def message_text(m: dict[str, Any]) -> str:
    """A message's text including its tool calls, for estimates."""
    calls = m.get("tool_calls") or []
    return (m.get("content") or "") + "".join(json.dumps(c.get("arguments")) for c in calls)


def tool_call(provider: str, call_id: str, name: str, arguments: str | dict[str, Any]) -> ToolCall:
    """One tool call from a provider's parts; arguments that are not a JSON object are an
    answer the model got wrong, so the attempt is retried."""
    if isinstance(arguments, str):
        try:
            arguments = jsonstrict.loads(arguments or "{}")
        except ValueError:
            arguments = None  # type: ignore[assignment]
    if not isinstance(arguments, dict) or not name:
        raise ProviderError(
            Failure.retryable, f"{provider}: malformed tool call {name or '(no name)'!r}"
        )
    return ToolCall(id=call_id, name=name, arguments=arguments)


def with_tool_calls(c: Completion, calls: list[ToolCall]) -> Completion:
    if not calls:
        return c
    return replace(c, tool_calls=tuple(calls), finish_reason="tool_calls")


def estimated(text: str, model: str, messages: list[dict[str, Any]], finish: str) -> Completion:
    """A completion whose usage the server did not report: counted by us, and marked so."""
    return Completion(
        text=text,
        model=model,
        input_tokens=prompt_estimate(messages),
        output_tokens=estimate_tokens(text),
        finish_reason=finish,
        estimated=True,
    )


@contextmanager
def reading(name: str, so_far: Callable[[], Completion]) -> Iterator[None]:
    """Around a stream's loop: anything that breaks it half way (a reset, bad JSON, a shape we
    did not expect) becomes a retryable error carrying what was already sent, which is billed."""
    try:
        yield
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise cut_off(name, exc, so_far()) from None


def finished(name: str, done: bool, so_far: Callable[[], Completion]) -> Completion:
    """The completion of a stream, or a cut-off error when it ended without finishing."""
    if not done:
        raise cut_off(name, EOFError("stream ended early"), so_far())
    return so_far()


def cut_off(name: str, exc: Exception, partial: Completion) -> ProviderError:
    """A stream that broke after it started: retryable, and what it used is still billed."""
    return ProviderError(
        Failure.retryable, f"{name}: stream cut off ({type(exc).__name__})", partial=partial
    )


class HttpProvider:
    """What every HTTP provider shares: identity, its config, key lookup, the transport, listing.

    Subclasses set `kind`, `default_base` and `models_path`, and write `_headers`,
    `complete` and, where their API has its own codes, `classify`.
    """

    kind: ClassVar[str]
    calls_tools: ClassVar[bool] = True  # every cloud API we speak has tool calls
    default_base: ClassVar[str]
    models_path: ClassVar[str]

    def __init__(
        self,
        name: str,
        conf: ProviderConfig,
        key: Callable[[], str | None],
        client: Transport,
    ) -> None:
        self.name = name
        self.conf = conf
        self.base_url = (conf.base_url or self.default_base).rstrip("/")
        self.model = conf.model
        self.heavy_model = conf.heavy_model
        self._key = key
        self._client = client

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def classify(self, status: int, headers: Mapping[str, str], body: Any) -> ProviderError:
        return classify_status(status, headers, body, self.name)

    def _stream(self, url: str, payload: dict[str, Any]) -> Any:
        """POST `payload` and give the open streaming response (a context manager)."""
        return post_stream(
            self._client,
            url,
            headers=self._headers(),
            payload=payload,
            classify=self.classify,
            name=self.name,
        )

    def _model_ids(self, body: Any) -> list[str]:
        return [m["id"] for m in body.get("data", []) if isinstance(m, dict) and "id" in m]

    async def list_models(self) -> list[str]:
        body = await get_json(
            self._client,
            f"{self.base_url}{self.models_path}",
            headers=self._headers(),
            classify=self.classify,
            name=self.name,
        )
        return self._model_ids(body)

    async def close(self) -> None:
        return None
