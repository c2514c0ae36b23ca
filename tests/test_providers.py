"""Each cloud provider against a fake server speaking that provider's wire format."""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentbox.providers import registry
from agentbox.providers.base import CloudProvider, Completion, Failure, ProviderError, Request
from agentbox.providers.prices import PriceTable
from agentbox.providers.proxies import Proxies
from agentbox.providers.seam import HttpxTransport, Transport
from agentbox.providers.transport import HttpClient
from agentbox.routing.pool import test_key as check_key
from agentbox.settings import ProviderConfig
from tests.fakes import (
    FakeProvider,
    Reply,
    anthropic_stream,
    error,
    gemini_stream,
    openai_stream,
    sse,
)
from tests.pki import make_pki

KEY = "sk-fake-key-1234567890"
REQ = Request([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], 50)
STREAMS = {
    "openai": lambda text: openai_stream(text, prompt_tokens=30, cached=10, reasoning=2),
    "anthropic": lambda text: anthropic_stream(text, input_tokens=20, cache_read=10, cache_write=5),
    "gemini": lambda text: gemini_stream(text, prompt=30, cached=10, thoughts=2),
}
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}


@pytest.fixture(params=["ours", "httpx"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    """Every case through both sides of the seam: our transport, and plain httpx standing in."""
    proxies = Proxies()  # none, whatever the environment running the tests says
    timeouts = httpx.Timeout(2.0)
    transport: Transport = (
        HttpClient(4, timeouts=timeouts, proxies=proxies)
        if request.param == "ours"
        else HttpxTransport(timeouts, proxies)
    )
    yield transport
    await transport.aclose()


def make(kind: str, fake: FakeProvider, client: Transport, **conf: Any) -> CloudProvider:
    base = f"{fake.url}/v1" if kind == "openai" else fake.url
    pc = ProviderConfig(kind=kind, base_url=base, model=MODELS[kind], **conf)  # type: ignore[arg-type]
    return registry.build(kind, pc, lambda: KEY, client)


async def fail(provider: CloudProvider, req: Request = REQ) -> ProviderError:
    with pytest.raises(ProviderError) as err:
        await provider.complete(req)
    assert KEY not in err.value.message
    return err.value


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_streamed_success_maps_text_usage_and_auth(
    kind: str, fake: FakeProvider, client: Transport
) -> None:
    fake.push(STREAMS[kind]("Hello there, friend."))
    seen: list[dict[str, Any]] = []

    async def progress(info: dict[str, Any]) -> None:
        seen.append(info)

    c = await make(kind, fake, client).complete(REQ, progress)
    assert c.text == "Hello there, friend."
    assert not c.estimated and c.cached_tokens == 10
    # Our input_tokens never include cache reads, whichever way the provider counts them.
    assert c.input_tokens == 20
    req = fake.requests[-1]
    auth = {
        "openai": ("authorization", f"Bearer {KEY}"),
        "anthropic": ("x-api-key", KEY),
        "gemini": ("x-goog-api-key", KEY),
    }[kind]
    assert req["headers"][auth[0]] == auth[1]
    body = req["json"]
    if kind == "openai":
        assert req["path"] == "/v1/chat/completions" and body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}
        assert c.reasoning_tokens == 2
    elif kind == "anthropic":
        assert req["path"] == "/v1/messages" and body["system"] == "Be brief."
        assert body["messages"] == [{"role": "user", "content": "Hi"}]
        assert c.cache_write_tokens == 5
    else:
        assert req["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert body["generationConfig"]["maxOutputTokens"] == 50
        assert c.reasoning_tokens == 2 and c.output_tokens == 3 + 2  # thoughts bill as output


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (400, Failure.bad_request),
        (401, Failure.auth),
        (403, Failure.auth),
        (500, Failure.retryable),
        (503, Failure.retryable),
        (408, Failure.retryable),
    ],
)
async def test_http_errors_are_classified(
    kind: str, status: int, failure: Failure, fake: FakeProvider, client: Transport
) -> None:
    fake.push(error(status, {"error": {"type": "x", "message": f"status {status} here"}}))
    err = await fail(make(kind, fake, client))
    assert err.failure == failure
    assert f"status {status} here" in err.message


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_429_honours_retry_after_and_retry_after_ms(
    kind: str, fake: FakeProvider, client: Transport
) -> None:
    body = {"error": {"type": "rate_limit_error", "message": "slow down"}}
    fake.push(
        error(429, body, **{"retry-after": "7"}),
        error(429, body, **{"retry-after-ms": "1500"}),
        error(429, body, **{"retry-after": "3600"}),
    )
    provider = make(kind, fake, client)
    assert (await fail(provider)).retry_after == 7
    assert (await fail(provider)).retry_after == 1.5
    assert (await fail(provider)).retry_after == 60  # capped


async def test_anthropic_529_overloaded_is_retryable(fake: FakeProvider, client: Transport) -> None:
    fake.push(
        error(
            529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        )
    )
    err = await fail(make("anthropic", fake, client))
    assert err.failure == Failure.retryable and "overloaded" in err.message


async def test_quota_errors_open_until_reset(fake: FakeProvider, client: Transport) -> None:
    fake.push(
        error(429, {"error": {"code": "insufficient_quota", "message": "You exceeded your quota"}})
    )
    err = await fail(make("openai", fake, client))
    assert err.failure == Failure.quota and err.until is not None

    fake.push(
        error(
            429,
            {
                "type": "error",
                "error": {
                    "type": "rate_limit_error",
                    "message": "cap",
                    "details": {"error_code": "enforced_spend_limit_reached"},
                },
            },
        )
    )
    err = await fail(make("anthropic", fake, client))
    assert err.failure == Failure.quota and err.until is not None and err.until > time.time() + 3600

    fake.push(
        error(
            429,
            {
                "error": {
                    "code": 429,
                    "status": "RESOURCE_EXHAUSTED",
                    "message": "quota",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                            "violations": [
                                {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}
                            ],
                        },
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"},
                    ],
                }
            },
        )
    )
    err = await fail(make("gemini", fake, client))
    assert err.failure == Failure.quota and err.until is not None and err.until > time.time()

    fake.push(
        error(
            429,
            {
                "error": {
                    "code": 429,
                    "message": "per minute",
                    "details": [
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}
                    ],
                }
            },
        )
    )
    err = await fail(make("gemini", fake, client))
    assert err.failure == Failure.retryable and err.retry_after == 37


async def test_gemini_bad_key_400_is_auth(fake: FakeProvider, client: Transport) -> None:
    fake.push(
        error(
            400,
            {
                "error": {
                    "code": 400,
                    "message": "API key not valid. Please pass a valid API key.",
                    "status": "INVALID_ARGUMENT",
                    "details": [{"reason": "API_KEY_INVALID"}],
                }
            },
        )
    )
    assert (await fail(make("gemini", fake, client))).failure == Failure.auth


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_timeout_and_connection_reset_are_retryable(
    kind: str, fake: FakeProvider, client: Transport
) -> None:
    fake.push(Reply(delay=3.0, body={}), Reply(reset=True))
    provider = make(kind, fake, client)
    err = await fail(provider)
    assert err.failure == Failure.retryable and "timed out" in err.message
    err = await fail(provider)
    assert err.failure == Failure.retryable and "connection" in err.message


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_cut_stream_is_retryable_and_still_counts_usage(
    kind: str, fake: FakeProvider, client: Transport
) -> None:
    reply = STREAMS[kind]("one two three four five six seven eight nine ten")
    reply.cut_after = 5
    fake.push(reply)
    err = await fail(make(kind, fake, client))
    assert err.failure == Failure.retryable and "cut off" in err.message
    assert err.partial is not None and err.partial.output_tokens >= 2
    assert err.partial.input_tokens > 0 and err.partial.estimated


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_malformed_json_in_stream_is_retryable(
    kind: str, fake: FakeProvider, client: Transport
) -> None:
    reply = STREAMS[kind]("a b c")
    reply.events.insert(1, b"data: {not json\n\n")
    fake.push(reply)
    err = await fail(make(kind, fake, client))
    assert err.failure == Failure.retryable and err.partial is not None


async def test_error_body_that_is_not_json(fake: FakeProvider, client: Transport) -> None:
    fake.push(Reply(status=502, body=b"<html>Bad gateway</html>"))
    err = await fail(make("openai", fake, client))
    assert err.failure == Failure.retryable and "502" in err.message


async def test_openai_compatible_server_without_usage_is_estimated(
    fake: FakeProvider, client: Transport
) -> None:
    fake.push(openai_stream("four little words here", usage=False, model="smollm2"))
    c = await make("openai", fake, client).complete(REQ)
    assert c.estimated and c.output_tokens > 0 and c.input_tokens > 0
    cost, estimated = PriceTable().cost(c)
    assert estimated and cost > 0  # an unknown model is never silently free


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_schema_request_shapes(kind: str, fake: FakeProvider, client: Transport) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    if kind == "anthropic":
        fake.push(anthropic_stream('{"ok": true}', tool=True))
    else:
        fake.push(STREAMS[kind]('{"ok": true}'))
    req = Request([{"role": "user", "content": "ok?"}], 20, "", schema)
    c = await make(kind, fake, client).complete(req)
    assert c.text.replace(" ", "") == '{"ok":true}'
    body = fake.requests[-1]["json"]
    if kind == "openai":
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["schema"] == schema
    elif kind == "anthropic":
        assert body["tools"][0]["input_schema"] == schema
        assert body["tool_choice"] == {"type": "tool", "name": "output"}
    else:
        assert body["generationConfig"]["responseJsonSchema"] == schema
        assert body["generationConfig"]["responseMimeType"] == "application/json"


async def test_openai_json_object_mode_for_llama_cpp_servers(
    fake: FakeProvider, client: Transport
) -> None:
    fake.push(openai_stream("{}"))
    schema = {"type": "object"}
    await make("openai", fake, client, response_format="json_object").complete(
        Request([{"role": "user", "content": "x"}], 5, "", schema)
    )
    assert fake.requests[-1]["json"]["response_format"] == {"type": "json_object", "schema": schema}


async def test_error_event_inside_an_anthropic_stream(
    fake: FakeProvider, client: Transport
) -> None:
    reply = anthropic_stream("a b c")
    reply.events.insert(
        3,
        sse(
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            "error",
        ),
    )
    fake.push(reply)
    err = await fail(make("anthropic", fake, client))
    assert err.failure == Failure.retryable and err.partial is not None


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_key_test_lists_models_and_reports_bad_keys(
    kind: str, fake: FakeProvider, client: Transport
) -> None:
    listing = (
        {"models": [{"name": f"models/{MODELS[kind]}"}]}
        if kind == "gemini"
        else {"data": [{"id": MODELS[kind]}, {"id": "other"}]}
    )
    fake.push(Reply(body=listing), error(401, {"error": {"message": "invalid x-api-key"}}))
    base = f"{fake.url}/v1" if kind == "openai" else fake.url
    conf = ProviderConfig(kind=kind, base_url=base, model=MODELS[kind])  # type: ignore[arg-type]
    ok, message = await check_key(kind, conf, KEY, client)
    assert ok and "key works" in message
    assert fake.requests[-1]["method"] == "GET"
    ok, message = await check_key(kind, conf, KEY, client)
    assert not ok and "key rejected (HTTP 401)" in message and KEY not in message


def test_prices_match_prefixes_and_flag_unknown_models() -> None:
    table = PriceTable()
    c = Completion(
        "x",
        "claude-sonnet-4-5-20250929",
        input_tokens=1_000_000,
        output_tokens=0,
        cached_tokens=1_000_000,
        cache_write_tokens=1_000_000,
    )
    cost, estimated = table.cost(c)
    assert cost == pytest.approx(3.00 + 0.30 + 3.75) and not estimated
    unknown = Completion("x", "mystery-model", input_tokens=1000, output_tokens=1000)
    cost, estimated = table.cost(unknown)
    assert estimated and cost > 0


async def test_https_through_our_transport(short_tmp: Path) -> None:
    """TLS to a provider (our h11 transport), connection reuse, and a wrong CA."""
    make_pki(short_tmp)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(short_tmp / "server.crt", short_tmp / "server.key")
    fake = FakeProvider(openai_stream("over TLS"), tls=server_tls)
    trusted = ssl.create_default_context(cafile=str(short_tmp / "ca.crt"))
    try:
        async with HttpClient(2, trusted) as c:
            provider = make("openai", fake, c)
            for _ in range(3):
                assert (await provider.complete(REQ)).text == "over TLS"
            assert len(fake.requests) == 3
        async with HttpClient(2) as c:  # system CAs only
            err = await fail(make("openai", fake, c))
            assert err.failure == Failure.retryable and "certificate" in err.message.lower()
    finally:
        fake.close()
