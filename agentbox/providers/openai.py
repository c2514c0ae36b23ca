"""OpenAI Chat Completions, which also serves every OpenAI-compatible server."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from agentbox.providers import http, tokens
from agentbox.providers.base import (
    Completion,
    Failure,
    LocalCounter,
    Progress,
    ProviderError,
    Request,
)

DEFAULT_BASE = "https://api.openai.com/v1"


class OpenAIProvider(http.HttpProvider):
    kind: ClassVar[str] = "openai"
    default_base: ClassVar[str] = DEFAULT_BASE
    models_path: ClassVar[str] = "/models"
    # Counts tokens when the server streams no usage and has no tokenizer (set by registry).
    local: LocalCounter | None = None

    @functools.cached_property
    def tokenizer(self) -> tokens.ServerTokenizer:
        return tokens.ServerTokenizer(self._client, self.base_url, self.model, self._headers)

    def _headers(self) -> dict[str, str]:
        # Local OpenAI-compatible servers (llama-server, Ollama, vLLM) often need no key; one
        # that says so gets none, even when a key of that name is stored.
        key = self._key() if self.conf.auth == "key" else None
        return {"authorization": f"Bearer {key}"} if key else {}

    def classify(self, status: int, headers: Mapping[str, str], body: Any) -> ProviderError:
        err = body.get("error") if isinstance(body, dict) else None
        code = err.get("code") if isinstance(err, dict) else None
        if status == 429 and code in ("insufficient_quota", "billing_hard_limit_reached"):
            text = http.error_text(body, "quota exhausted")
            return ProviderError(
                Failure.quota,
                f"{self.name}: quota exhausted: {text}",
                until=time.time() + http.QUOTA_UNKNOWN_RESET_S,
            )
        return http.classify_status(status, headers, body, self.name)

    def _payload(self, request: Request) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": [_message(m) for m in request.messages],
            "max_tokens": request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            payload["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
        schema = request.json_schema
        if schema is not None and self.conf.response_format == "json_schema":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": False},
            }
        elif schema is not None and self.conf.response_format == "json_object":
            # llama-cpp-python's server (and Anyscale-style APIs) take the schema this way.
            payload["response_format"] = {"type": "json_object", "schema": schema}
        return payload

    async def complete(self, request: Request, progress: Progress | None = None) -> Completion:
        payload = self._payload(request)
        parts: list[str] = []
        usage: dict[str, Any] | None = None
        finish = ""
        model = payload["model"]
        pieces = 0
        calls: dict[int, dict[str, Any]] = {}  # tool calls arrive in pieces, by index

        def so_far() -> Completion:
            return self._completion(parts, usage, finish or "cut_off", model, request)

        async with self._stream(f"{self.base_url}/chat/completions", payload) as resp:
            with http.reading(self.name, so_far):
                async for _, data in http.sse(resp):
                    if data.strip() == "[DONE]":
                        # read on to the end of the body so the connection goes back to the pool
                        continue
                    chunk = json.loads(data)
                    if "error" in chunk:
                        text = http.error_text(chunk, "error in stream")
                        raise ProviderError(
                            Failure.retryable, f"{self.name}: {text}", partial=so_far()
                        )
                    model = chunk.get("model") or model
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        for tc in delta.get("tool_calls") or []:
                            slot = calls.setdefault(tc.get("index", 0), {"args": []})
                            fn = tc.get("function") or {}
                            slot["id"] = tc.get("id") or slot.get("id", "")
                            slot["name"] = fn.get("name") or slot.get("name", "")
                            slot["args"].append(fn.get("arguments") or "")
                        piece = delta.get("content")
                        if piece:
                            parts.append(piece)
                            pieces += 1
                            if progress is not None and (pieces == 1 or pieces % 32 == 0):
                                await progress({"output_tokens": pieces})
                        finish = choice.get("finish_reason") or finish
        done = http.with_tool_calls(
            http.finished(self.name, bool(finish), so_far),
            [
                http.tool_call(self.name, c["id"], c["name"], "".join(c["args"]))
                for _, c in sorted(calls.items())
            ],
        )
        if done.estimated:  # llama-cpp-python's server, Ollama's older ones: no usage chunk
            done = await tokens.recount(done, request.messages, self.tokenizer, self.local)
        return done

    def _completion(
        self,
        parts: list[str],
        usage: dict[str, Any] | None,
        finish: str,
        model: str,
        request: Request,
    ) -> Completion:
        text = "".join(parts)
        if not usage:
            return http.estimated(text, model, request.messages, finish)
        prompt = int(usage.get("prompt_tokens") or 0)
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
        return Completion(
            text=text,
            model=model,
            input_tokens=prompt - cached,  # OpenAI counts cached tokens inside prompt_tokens
            output_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=finish,
            cached_tokens=cached,
            reasoning_tokens=reasoning,
        )


def _message(m: dict[str, Any]) -> dict[str, Any]:
    """Our neutral message to Chat Completions' shape (arguments travel as a JSON string)."""
    if m["role"] == "tool":
        return {"role": "tool", "tool_call_id": m["tool_call_id"], "content": m["content"]}
    if m["role"] == "assistant" and m.get("tool_calls"):
        return {
            "role": "assistant",
            "content": m.get("content") or None,
            "tool_calls": [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
                }
                for c in m["tool_calls"]
            ],
        }
    return {"role": m["role"], "content": m["content"]}
