"""Google Gemini generateContent (streamed)."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agentbox.providers import http
from agentbox.providers.base import Completion, Failure, Progress, ProviderError, Request

DEFAULT_BASE = "https://generativelanguage.googleapis.com"


def next_pacific_midnight(now: float) -> float:
    """Gemini's daily quotas reset at midnight Pacific time."""
    try:
        zone: dt.tzinfo = ZoneInfo("America/Los_Angeles")
    except ZoneInfoNotFoundError:
        zone = dt.timezone(dt.timedelta(hours=-8))
    local = dt.datetime.fromtimestamp(now, zone)
    tomorrow = (local + dt.timedelta(days=1)).date()
    return dt.datetime.combine(tomorrow, dt.time(), tzinfo=zone).timestamp()


def _details(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, list) and body:
        body = body[0]
    err = body.get("error") if isinstance(body, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    return [d for d in details or [] if isinstance(d, dict)]


class GeminiProvider(http.HttpProvider):
    kind: ClassVar[str] = "gemini"
    default_base: ClassVar[str] = DEFAULT_BASE
    models_path: ClassVar[str] = "/v1beta/models"

    def _headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self._key() or ""}

    def classify(self, status: int, headers: Mapping[str, str], body: Any) -> ProviderError:
        details = _details(body)
        text = http.error_text(body, f"HTTP {status}")
        reasons = {d.get("reason") for d in details}
        if "API_KEY_INVALID" in reasons or (status == 400 and "API key not valid" in text):
            # Gemini answers a bad key with 400, not 401.
            return ProviderError(Failure.auth, f"{self.name}: key rejected: {text}")
        if status == 429:
            quota_ids = [
                v.get("quotaId", "")
                for d in details
                if d.get("@type", "").endswith("QuotaFailure")
                for v in d.get("violations", [])
                if isinstance(v, dict)
            ]
            if any("PerDay" in q for q in quota_ids):
                return ProviderError(
                    Failure.quota,
                    f"{self.name}: daily quota exhausted: {text}",
                    until=next_pacific_midnight(time.time()),
                )
            delay = next(
                (d.get("retryDelay") for d in details if d.get("@type", "").endswith("RetryInfo")),
                None,
            )
            wait = http.retry_after(headers)
            if isinstance(delay, str) and re.fullmatch(r"[0-9.]+s", delay):
                wait = min(float(delay[:-1]), http.RETRY_AFTER_CAP_S)
            return ProviderError(
                Failure.retryable, f"{self.name}: HTTP 429: {text}", retry_after=wait
            )
        return http.classify_status(status, headers, body, self.name)

    def _payload(self, request: Request) -> dict[str, Any]:
        system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
        contents = _contents(request.messages)
        config: dict[str, Any] = {"maxOutputTokens": request.max_tokens}
        if request.json_schema is not None:
            config["responseMimeType"] = "application/json"
            config["responseJsonSchema"] = request.json_schema
        payload: dict[str, Any] = {"contents": contents, "generationConfig": config}
        if system:
            payload["systemInstruction"] = {"parts": [{"text": system}]}
        if request.tools:
            declarations = [
                {"name": t.name, "description": t.description, "parametersJsonSchema": t.parameters}
                for t in request.tools
            ]
            payload["tools"] = [{"functionDeclarations": declarations}]
        return payload

    async def complete(self, request: Request, progress: Progress | None = None) -> Completion:
        model = request.model or self.model
        parts: list[str] = []
        state: dict[str, Any] = {"finish": "", "usage": {}, "model": model}
        pieces = 0
        calls: list[dict[str, Any]] = []  # Gemini sends each function call whole

        def so_far() -> Completion:
            return self._completion(parts, state, request)

        url = f"{self.base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse"
        async with self._stream(url, self._payload(request)) as resp:
            with http.reading(self.name, so_far):
                async for _, data in http.sse(resp):
                    chunk = json.loads(data)
                    if "error" in chunk:
                        err = self.classify(int(chunk["error"].get("code") or 500), {}, chunk)
                        err.partial = so_far()
                        raise err
                    state["usage"] = chunk.get("usageMetadata") or state["usage"]
                    state["model"] = chunk.get("modelVersion") or state["model"]
                    for cand in chunk.get("candidates") or []:
                        for part in (cand.get("content") or {}).get("parts") or []:
                            if isinstance(part.get("functionCall"), dict):
                                calls.append(part["functionCall"])
                            elif part.get("text") and not part.get("thought"):
                                parts.append(part["text"])
                                pieces += 1
                                if progress is not None and (pieces == 1 or pieces % 32 == 0):
                                    await progress({"output_tokens": pieces})
                        state["finish"] = cand.get("finishReason") or state["finish"]
        done = http.finished(self.name, bool(state["finish"]), so_far)
        return http.with_tool_calls(
            done,
            [
                # Older models send no call id: one is made up so results can refer to it.
                http.tool_call(
                    self.name, c.get("id") or f"call_{i}", c.get("name", ""), c.get("args") or {}
                )
                for i, c in enumerate(calls)
            ],
        )

    def _completion(self, parts: list[str], state: dict[str, Any], request: Request) -> Completion:
        text = "".join(parts)
        usage = state["usage"]
        finish = str(state["finish"] or "cut_off").lower()
        if "promptTokenCount" not in usage:
            return http.estimated(text, state["model"], request.messages, finish)
        cached = int(usage.get("cachedContentTokenCount") or 0)
        thoughts = int(usage.get("thoughtsTokenCount") or 0)
        output = int(usage.get("candidatesTokenCount") or 0) + thoughts  # thoughts bill as output
        cut = not state["finish"]
        return Completion(
            text=text,
            model=state["model"],
            input_tokens=int(usage["promptTokenCount"]) - cached,  # cached is inside the prompt
            output_tokens=max(output, http.estimate_tokens(text)) if cut else output,
            finish_reason=finish,
            cached_tokens=cached,
            reasoning_tokens=thoughts,
            estimated=cut,
        )

    def _model_ids(self, body: Any) -> list[str]:
        return [
            str(m["name"]).removeprefix("models/")
            for m in body.get("models", [])
            if isinstance(m, dict) and "name" in m
        ]


def _contents(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our neutral messages to Gemini's contents: the assistant is "model", tool calls are
    functionCall parts, and tool results are functionResponse parts of one user turn."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "system":
            continue
        if m["role"] == "tool":
            part = {"functionResponse": {"name": m["name"], "response": {"content": m["content"]}}}
            last = out[-1] if out else None
            if last and last["role"] == "user" and "functionResponse" in last["parts"][0]:
                last["parts"].append(part)
            else:
                out.append({"role": "user", "parts": [part]})
        elif m["role"] == "assistant":
            parts: list[dict[str, Any]] = [{"text": m["content"]}] if m.get("content") else []
            parts += [
                {"functionCall": {"name": c["name"], "args": c["arguments"]}}
                for c in m.get("tool_calls") or []
            ]
            out.append({"role": "model", "parts": parts})
        else:
            out.append({"role": "user", "parts": [{"text": m["content"]}]})
    return out
