"""Counting tokens for OpenAI-compatible servers that stream no usage: llama.cpp's server
endpoints (a fake of ours in their documented shape), a server with no tokenizer at all, and
the local model's tokenizer standing in."""

from __future__ import annotations

from typing import Any

import pytest

from agentbox.providers import http, registry
from agentbox.providers.base import Request
from agentbox.providers.local import LocalProvider
from agentbox.providers.transport import HttpClient
from agentbox.settings import ProviderConfig
from tests.fakes import FakeProvider, Reply, error, openai_stream

REQ = Request([{"role": "user", "content": "Say hello."}], 16)
ANSWER = "Hello there, how are you today?"
TEMPLATE = "<|system|>You are a very helpful assistant.<|user|>{}<|assistant|>"


def words(text: str) -> int:
    return len(text.split())


def llama_cpp_server(request: dict[str, Any]) -> Reply:
    """llama.cpp's llama-server: no usage in the stream, /tokenize and /apply-template beside
    /v1 (its tokens here: one per word)."""
    path, body = request["path"], request["json"] or {}
    if path == "/v1/chat/completions":
        return openai_stream(ANSWER, model="qwen", usage=False)
    if path == "/apply-template":
        return Reply(body={"prompt": TEMPLATE.format(body["messages"][-1]["content"])})
    if path == "/tokenize" and body.get("parse_special") and "content" in body:
        return Reply(body={"tokens": list(range(words(body["content"])))})
    return error(404, {"error": {"message": "File Not Found"}})


def bare_server(request: dict[str, Any]) -> Reply:
    if request["path"] == "/v1/chat/completions":
        return openai_stream(ANSWER, model="qwen", usage=False)
    return error(404, {"error": {"message": "not found"}})


def keyless(fake: FakeProvider) -> ProviderConfig:
    return ProviderConfig(kind="openai", base_url=f"{fake.url}/v1", model="qwen", auth="none")


async def test_llama_cpp_server_counts_with_its_own_template_and_tokenizer(
    fake: FakeProvider, client: HttpClient
) -> None:
    fake.answer = llama_cpp_server
    provider = registry.build("lan", keyless(fake), lambda: None, client)
    c = await provider.complete(REQ)
    assert c.input_tokens == words(TEMPLATE.format("Say hello."))
    assert c.output_tokens == words(ANSWER)
    assert c.estimated  # still not the server's own usage report
    paths = [r["path"] for r in fake.requests]
    assert "/apply-template" in paths and "/tokenize" in paths  # beside /v1, not under it


async def test_a_server_without_a_tokenizer_keeps_the_estimate_and_is_asked_once(
    fake: FakeProvider, client: HttpClient
) -> None:
    fake.answer = bare_server
    provider = registry.build("lan", keyless(fake), lambda: None, client)
    for _ in range(2):
        c = await provider.complete(REQ)
        assert c.input_tokens == http.prompt_estimate(REQ.messages)
        assert c.output_tokens == http.estimate_tokens(ANSWER) and c.estimated
    probes = [r["path"] for r in fake.requests if not r["path"].startswith("/v1/")]
    assert probes == ["/tokenize", "/extras/tokenize/count"]  # once, then remembered


async def test_a_failing_tokenizer_is_asked_again_later(
    fake: FakeProvider, client: HttpClient
) -> None:
    """A 5xx says the server is busy, not that it has no tokenizer."""
    broken = True

    def answer(request: dict[str, Any]) -> Reply:
        if broken and request["path"] == "/tokenize":
            return error(503, {"error": {"message": "loading model"}})
        return llama_cpp_server(request)

    fake.answer = answer
    provider = registry.build("lan", keyless(fake), lambda: None, client)
    assert (await provider.complete(REQ)).input_tokens == http.prompt_estimate(REQ.messages)
    broken = False
    assert (await provider.complete(REQ)).input_tokens == words(TEMPLATE.format("Say hello."))


@pytest.fixture
async def local() -> Any:
    provider = LocalProvider("", 1, 1024)
    yield provider
    await provider.close()


async def test_the_local_model_counts_when_the_server_cannot(
    fake: FakeProvider, client: HttpClient, local: LocalProvider
) -> None:
    fake.answer = bare_server
    provider = registry.build("lan", keyless(fake), lambda: None, client, local=local)
    before = await provider.complete(REQ)  # the worker is not up: nothing is loaded for a count
    assert before.input_tokens == http.prompt_estimate(REQ.messages)
    assert not local.loaded

    done = await local.complete(Request(REQ.messages, 4))
    real_input = done.input_tokens  # what the local model really evaluated for this chat
    c = await provider.complete(REQ)
    assert c.input_tokens == real_input
    assert c.input_tokens != before.input_tokens
    assert abs(c.output_tokens - words(ANSWER)) <= 3  # its tokenizer, not the char estimate
    assert c.estimated
