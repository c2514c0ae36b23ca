"""Token counts for a server that streams no usage: its own tokenizer endpoint, else the local
model's chat template and tokenizer, else the character estimate it already has."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx

from agentbox.providers import seam
from agentbox.providers.base import Completion, LocalCounter
from agentbox.providers.http import message_text
from agentbox.providers.seam import Transport

TOKENIZE_TIMEOUT = httpx.Timeout(5.0)  # a count is a nicety: never hold a finished task long
LLAMA_CPP = "llama.cpp"  # the C++ llama-server: POST /tokenize, POST /apply-template
LLAMA_CPP_PYTHON = "llama-cpp-python"  # python -m llama_cpp.server: POST /extras/tokenize/count


def chatml(messages: list[dict[str, Any]]) -> str:
    """The chat in ChatML framing, for a server tokenizer when no template is known."""
    turns = "".join(f"<|im_start|>{m['role']}\n{message_text(m)}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


class _Down(Exception):
    """The server could not be reached: ask again next time, decide nothing."""


class ServerTokenizer:
    """The tokenizer endpoint of an OpenAI-compatible server, found on first use and then
    remembered (a server without one is asked once per provider configuration)."""

    def __init__(
        self, client: Transport, base_url: str, model: str, headers: Callable[[], dict[str, str]]
    ) -> None:
        self.root = base_url.removesuffix("/v1")  # these endpoints sit beside /v1, not in it
        self.model = model
        self.kind: str | None = None
        self.absent = False
        self._client = client
        self._headers = headers

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        """The JSON answer, or None when the server has no such endpoint."""
        headers = {**self._headers(), "content-type": "application/json"}
        try:
            async with seam.stream(
                self._client,
                "POST",
                f"{self.root}{path}",
                headers=headers,
                content=json.dumps(body).encode(),
                timeouts=TOKENIZE_TIMEOUT,
            ) as resp:
                await resp.aread()
        except httpx.HTTPError:
            raise _Down from None
        if resp.status_code >= 500:
            raise _Down  # a busy or broken server says nothing about its endpoints
        if resp.status_code >= 300:
            return None
        try:
            return resp.json()
        except ValueError:
            return None

    async def _count_as(self, kind: str, text: str) -> int | None:
        if kind == LLAMA_CPP:
            body = await self._post(
                "/tokenize", {"content": text, "add_special": False, "parse_special": True}
            )
            tokens = body.get("tokens") if isinstance(body, dict) else None
            return len(tokens) if isinstance(tokens, list) else None
        body = await self._post("/extras/tokenize/count", {"input": text, "model": self.model})
        count = body.get("count") if isinstance(body, dict) else None
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    async def count(self, text: str) -> int | None:
        """Tokens in `text` by the server's own tokenizer, or None when it has none."""
        if self.absent:
            return None
        try:
            for kind in [self.kind] if self.kind else [LLAMA_CPP, LLAMA_CPP_PYTHON]:
                n = await self._count_as(kind, text)
                if n is not None:
                    self.kind = kind
                    return n
        except _Down:
            return None
        self.absent = self.kind is None
        return None

    async def template(self, messages: list[dict[str, Any]]) -> str | None:
        """The chat as the server's own template renders it (llama.cpp's server only)."""
        if self.kind != LLAMA_CPP:
            return None
        try:
            body = await self._post(
                "/apply-template",
                {"messages": [{"role": m["role"], "content": message_text(m)} for m in messages]},
            )
        except _Down:
            return None
        prompt = body.get("prompt") if isinstance(body, dict) else None
        return prompt if isinstance(prompt, str) else None


async def recount(
    c: Completion,
    messages: list[dict[str, Any]],
    server: ServerTokenizer,
    local: LocalCounter | None,
) -> Completion:
    """A finished completion without usage, counted as well as this box can: the server's
    tokenizer (on the server's template, else the local model's, else ChatML), else the local
    model's own counts, else the estimate it came with. It stays marked estimated."""
    out = c.text + "".join(json.dumps(t.arguments) for t in c.tool_calls)
    mine = await local.count(messages, [out]) if local is not None else None
    first = await server.count(out) if out else 0  # also finds which server this is
    rendered = await server.template(messages) if first is not None else None
    prompt = rendered or (mine.prompt if mine else None) or chatml(messages)
    n_in = await server.count(prompt) if first is not None else None
    n_out = first
    if mine is not None:
        n_in = mine.prompt_tokens if n_in is None else n_in
        n_out = mine.text_tokens[0] if n_out is None else n_out
    return replace(
        c,
        input_tokens=c.input_tokens if n_in is None else n_in,
        output_tokens=c.output_tokens if n_out is None else n_out,
    )
