"""Tool calls in each provider's documented wire format: the request mapping both ways."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentbox.providers.base import Failure, ProviderError, Request, Tool, ToolCall
from agentbox.providers.transport import HttpClient
from tests.fakes import FakeProvider, Reply, sse
from tests.test_providers import make

WEATHER = Tool(
    "get_weather",
    "Current weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
ASK = Request([{"role": "user", "content": "Weather in Oslo and Rome?"}], 100, tools=(WEATHER,))
CONVERSATION = Request(
    [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": "Weather in Oslo and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "call_1", "name": "get_weather", "arguments": {"city": "Oslo"}},
                {"id": "call_2", "name": "get_weather", "arguments": {"city": "Rome"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "-3 C"},
        {"role": "tool", "tool_call_id": "call_2", "name": "get_weather", "content": "14 C"},
    ],
    100,
    tools=(WEATHER,),
)
STREAM = {"content-type": "text/event-stream"}


def openai_calls(args: tuple[str, str] = ('{"city": "Oslo"}', '{"city": "Rome"}')) -> Reply:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(
            {
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    frames = []
    for i, (call_id, text) in enumerate(zip(("call_a", "call_b"), args, strict=True)):
        head = {
            "index": i,
            "id": call_id,
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        }
        frames.append(chunk({"role": "assistant", "content": None, "tool_calls": [head]}))
        for piece in (text[:5], text[5:]):  # arguments arrive as pieces of a JSON string
            frames.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    frames.append(chunk({}, "tool_calls"))
    usage = {"prompt_tokens": 60, "completion_tokens": 30}
    frames += [sse({"model": "gpt-4o-mini", "choices": [], "usage": usage}), sse("[DONE]")]
    return Reply(events=frames, headers=STREAM)


def anthropic_calls() -> Reply:
    def ev(kind: str, **body: Any) -> bytes:
        return sse({"type": kind, **body}, kind)

    frames = [
        ev(
            "message_start",
            message={
                "model": "claude-haiku-4-5",
                "usage": {"input_tokens": 60, "output_tokens": 1},
            },
        ),
        ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "Checking."}),
        ev("content_block_stop", index=0),
    ]
    for i, (use_id, city) in enumerate((("toolu_a", "Oslo"), ("toolu_b", "Rome")), start=1):
        block = {"type": "tool_use", "id": use_id, "name": "get_weather", "input": {}}
        frames.append(ev("content_block_start", index=i, content_block=block))
        for piece in ('{"city":', f' "{city}"}}'):
            delta = {"type": "input_json_delta", "partial_json": piece}
            frames.append(ev("content_block_delta", index=i, delta=delta))
        frames.append(ev("content_block_stop", index=i))
    frames += [
        ev("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 30}),
        ev("message_stop"),
    ]
    return Reply(events=frames, headers=STREAM)


def gemini_calls() -> Reply:
    parts = [
        {"functionCall": {"name": "get_weather", "args": {"city": c}}} for c in ("Oslo", "Rome")
    ]
    chunk = {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 60, "candidatesTokenCount": 30},
        "modelVersion": "gemini-2.5-flash",
    }
    return Reply(events=[sse(chunk)], headers=STREAM)


CALLS = {"openai": openai_calls, "anthropic": anthropic_calls, "gemini": gemini_calls}
IDS = {
    "openai": ("call_a", "call_b"),
    "anthropic": ("toolu_a", "toolu_b"),
    "gemini": ("call_0", "call_1"),
}


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_streamed_tool_calls_are_assembled(
    kind: str, fake: FakeProvider, client: HttpClient
) -> None:
    fake.push(CALLS[kind]())
    c = await make(kind, fake, client).complete(ASK)
    first, second = IDS[kind]
    assert c.tool_calls == (
        ToolCall(first, "get_weather", {"city": "Oslo"}),
        ToolCall(second, "get_weather", {"city": "Rome"}),
    )
    assert c.finish_reason == "tool_calls" and c.input_tokens == 60 and c.output_tokens == 30
    assert c.text == ("Checking." if kind == "anthropic" else "")
    body = fake.requests[-1]["json"]
    declared = {
        "openai": lambda b: b["tools"][0]["function"]["parameters"],
        "anthropic": lambda b: b["tools"][0]["input_schema"],
        "gemini": lambda b: b["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"],
    }[kind](body)
    assert declared == WEATHER.parameters


async def test_openai_maps_a_tool_conversation(fake: FakeProvider, client: HttpClient) -> None:
    fake.push(openai_calls())
    await make("openai", fake, client).complete(CONVERSATION)
    messages = fake.requests[-1]["json"]["messages"]
    assert messages[2] == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": "Oslo"})},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": "Rome"})},
            },
        ],
    }
    assert messages[3:] == [
        {"role": "tool", "tool_call_id": "call_1", "content": "-3 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "14 C"},
    ]


async def test_anthropic_maps_a_tool_conversation(fake: FakeProvider, client: HttpClient) -> None:
    fake.push(anthropic_calls())
    await make("anthropic", fake, client).complete(CONVERSATION)
    body = fake.requests[-1]["json"]
    assert body["system"] == "Use the tools." and "tool_choice" not in body
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
        ],
    }
    # Both results in one user turn, as the Messages API wants them.
    assert body["messages"][2:] == [
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "-3 C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "14 C"},
            ],
        }
    ]


async def test_gemini_maps_a_tool_conversation(fake: FakeProvider, client: HttpClient) -> None:
    fake.push(gemini_calls())
    await make("gemini", fake, client).complete(CONVERSATION)
    body = fake.requests[-1]["json"]
    assert body["systemInstruction"] == {"parts": [{"text": "Use the tools."}]}
    assert body["contents"][1] == {
        "role": "model",
        "parts": [
            {"text": "Checking."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
        ],
    }
    assert body["contents"][2:] == [
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"content": "-3 C"}}},
                {"functionResponse": {"name": "get_weather", "response": {"content": "14 C"}}},
            ],
        }
    ]


async def test_malformed_tool_arguments_are_retryable(
    fake: FakeProvider, client: HttpClient
) -> None:
    fake.push(openai_calls(('{"city": "Os', '{"city": "Rome"}')))
    with pytest.raises(ProviderError) as err:
        await make("openai", fake, client).complete(ASK)
    assert err.value.failure == Failure.retryable
    assert "malformed tool call 'get_weather'" in err.value.message
