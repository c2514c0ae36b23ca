"""Anthropic Messages API."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from agentbox.providers import http
from agentbox.providers.base import Completion, Failure, Progress, ProviderError, Request

DEFAULT_BASE = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
SCHEMA_TOOL = "output"


def next_month_utc(now: float) -> float:
    """Midnight UTC on the first of next month: when an enforced spend limit lifts."""
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp()


class AnthropicProvider(http.HttpProvider):
    kind: ClassVar[str] = "anthropic"
    default_base: ClassVar[str] = DEFAULT_BASE
    models_path: ClassVar[str] = "/v1/models"

    def _headers(self) -> dict[str, str]:
        return {"x-api-key": self._key() or "", "anthropic-version": API_VERSION}

    def classify(self, status: int, headers: Mapping[str, str], body: Any) -> ProviderError:
        raw = body.get("error") if isinstance(body, dict) else None
        err: dict[str, Any] = raw if isinstance(raw, dict) else {}
        text = http.error_text(body, f"HTTP {status}")
        details = err.get("details") if isinstance(err.get("details"), dict) else {}
        assert isinstance(details, dict)
        if status == 429 and details.get("error_code") == "enforced_spend_limit_reached":
            return ProviderError(
                Failure.quota,
                f"{self.name}: monthly spend limit reached: {text}",
                until=next_month_utc(time.time()),
            )
        if status == 400 and text.startswith("You have reached your specified"):
            return ProviderError(
                Failure.quota,
                f"{self.name}: usage limit reached: {text}",
                until=time.time() + http.QUOTA_UNKNOWN_RESET_S,
            )
        if status == 529 or err.get("type") == "overloaded_error":
            return ProviderError(
                Failure.retryable,
                f"{self.name}: overloaded (HTTP {status})",
                retry_after=http.retry_after(headers),
            )
        return http.classify_status(status, headers, body, self.name)

    def _payload(self, request: Request) -> dict[str, Any]:
        system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
        payload: dict[str, Any] = {
            "model": request.model or self.model,
            "max_tokens": request.max_tokens,
            "messages": _messages(request.messages),
            "stream": True,
        }
        if system:
            payload["system"] = system
        tools = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
        if request.json_schema is not None:
            tools.append(
                {
                    "name": SCHEMA_TOOL,
                    "description": "Give the answer as JSON matching this schema.",
                    "input_schema": request.json_schema,
                }
            )
            if not request.tools:  # with tools of its own, the model may call those first
                payload["tool_choice"] = {"type": "tool", "name": SCHEMA_TOOL}
        if tools:
            payload["tools"] = tools
        return payload

    async def complete(self, request: Request, progress: Progress | None = None) -> Completion:
        payload = self._payload(request)
        state: dict[str, Any] = {"model": payload["model"], "finish": "", "usage": {}}
        parts: list[str] = []
        pieces = 0
        blocks: dict[int, dict[str, Any]] = {}  # tool_use blocks by index; their JSON in pieces

        def so_far() -> Completion:
            return self._completion(parts, state, request)

        async with self._stream(f"{self.base_url}/v1/messages", payload) as resp:
            with http.reading(self.name, so_far):
                async for event, data in http.sse(resp):
                    msg = json.loads(data)
                    kind = msg.get("type", event)
                    if kind == "message_start":
                        message = msg["message"]
                        state["model"] = message.get("model") or state["model"]
                        state["usage"].update(message.get("usage") or {})
                    elif kind == "content_block_start":
                        block = msg.get("content_block") or {}
                        if block.get("type") == "tool_use" and block.get("name") != SCHEMA_TOOL:
                            blocks[msg.get("index", 0)] = {**block, "json": []}
                    elif kind == "content_block_delta":
                        delta = msg["delta"]
                        piece = delta.get("text") or delta.get("partial_json")
                        call = blocks.get(msg.get("index", 0))
                        if call is not None:
                            call["json"].append(delta.get("partial_json") or "")
                        elif piece:
                            parts.append(piece)
                            pieces += 1
                            if progress is not None and (pieces == 1 or pieces % 32 == 0):
                                await progress({"output_tokens": pieces})
                    elif kind == "message_delta":
                        state["finish"] = (msg.get("delta") or {}).get("stop_reason") or ""
                        state["usage"].update(msg.get("usage") or {})
                    elif kind == "error":
                        err = self.classify(529, {}, msg)
                        err.partial = so_far()
                        raise err
                    elif kind == "message_stop":
                        continue  # read to the end: a drained response keeps its connection
        done = http.finished(self.name, bool(state["finish"]), so_far)
        return http.with_tool_calls(
            done,
            [
                http.tool_call(self.name, b.get("id", ""), b.get("name", ""), "".join(b["json"]))
                for _, b in sorted(blocks.items())
            ],
        )

    def _completion(self, parts: list[str], state: dict[str, Any], request: Request) -> Completion:
        text = "".join(parts)
        usage = state["usage"]
        if "input_tokens" not in usage:
            return http.estimated(
                text, state["model"], request.messages, state["finish"] or "cut_off"
            )
        output = int(usage.get("output_tokens") or 0)
        cut = not state["finish"]
        if cut:
            # message_start carries a placeholder output count; only message_delta has the
            # real one. A cut stream is billed for what it sent, so never count less.
            output = max(output, http.estimate_tokens(text))
        # Anthropic counts cache reads and writes outside input_tokens.
        return Completion(
            text=text,
            model=state["model"],
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=output,
            finish_reason=state["finish"] or "cut_off",
            cached_tokens=int(usage.get("cache_read_input_tokens") or 0),
            cache_write_tokens=int(usage.get("cache_creation_input_tokens") or 0),
            estimated=cut,
        )


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our neutral messages to Anthropic's: tool calls are tool_use blocks of the assistant,
    tool results are tool_result blocks of one user turn (consecutive results share it)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "system":
            continue
        if m["role"] == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": m["tool_call_id"],
                "content": m["content"],
            }
            last = out[-1] if out else None
            if last and last["role"] == "user" and isinstance(last["content"], list):
                last["content"].append(result)
            else:
                out.append({"role": "user", "content": [result]})
        elif m["role"] == "assistant" and m.get("tool_calls"):
            text = [{"type": "text", "text": m["content"]}] if m.get("content") else []
            uses = [
                {"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["arguments"]}
                for c in m["tool_calls"]
            ]
            out.append({"role": "assistant", "content": text + uses})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out
