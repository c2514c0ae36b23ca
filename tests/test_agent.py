"""Agent tasks: the loop with real providers' wire formats (fake servers on loopback), the
built-in tools, routing rules, budget across steps, and a daemon answering `submit --kind agent`."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentbox.agent.names import NAMES
from agentbox.agent.tools import (
    CATALOG,
    Context,
    FetchClient,
    calculator,
    clock,
    host_allowed,
)
from agentbox.providers.base import Failure, ProviderError
from agentbox.routing.router import Router
from agentbox.routing.runner import Outcome
from agentbox.settings import AgentConfig, ProviderConfig, RoutingConfig, Settings
from agentbox.tasks.notes import NoteStore
from agentbox.tasks.spec import parse_spec
from agentbox.tasks.store import Store
from agentbox.vocabulary import ErrorCode, SpecError, TaskSpec
from tests.conftest import Daemon
from tests.fakes import (
    FakeProvider,
    Reply,
    anthropic_stream,
    error,
    gemini_stream,
    openai_stream,
    tool_calls,
)
from tests.rig import Rig

FINAL: dict[str, Callable[[str], Reply]] = {
    "openai": openai_stream,
    "anthropic": anthropic_stream,
    "gemini": gemini_stream,
}
BASE = {"openai": "/v1", "anthropic": "", "gemini": ""}
MODEL = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}


def cloud(kind: str, fake: FakeProvider, name: str = "main") -> dict[str, Any]:
    return {"kind": kind, "base_url": f"{fake.url}{BASE[kind]}", "model": MODEL[kind]}


async def run(
    rig: Rig, spec: dict[str, Any], events: list[dict[str, Any]] | None = None
) -> Outcome:
    task = TaskSpec.model_validate(spec).with_id()
    decision = Router(rig.settings, rig.pool.available).decide(task)

    async def progress(info: dict[str, Any]) -> None:
        if events is not None:
            events.append(info)

    return await rig.runner.run(task, decision.route, progress)


def tool_messages(request: dict[str, Any], kind: str) -> list[str]:
    """The tool results the model was given, in the provider's own wire format."""
    body = request["json"]
    if kind == "openai":
        return [m["content"] for m in body["messages"] if m["role"] == "tool"]
    if kind == "anthropic":
        return [
            b["content"]
            for m in body["messages"]
            if isinstance(m["content"], list)
            for b in m["content"]
            if b.get("type") == "tool_result"
        ]
    return [
        p["functionResponse"]["response"]["content"]
        for c in body["contents"]
        for p in c["parts"]
        if "functionResponse" in p
    ]


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_agent_calls_tools_and_answers(
    rig_factory: Any, fake: FakeProvider, kind: str
) -> None:
    fake.push(
        tool_calls(kind, ("calculator", {"expression": "17 * 23"}), ("clock", {"timezone": "UTC"})),
        tool_calls(kind, ("calculator", {"expression": "1/0"})),
        FINAL[kind]("The answer is 391"),
    )
    rig = await rig_factory({"providers": {"main": cloud(kind, fake)}})
    rig.pool.keystore.set("main", "sk-test-key-0123456789")
    rig.pool.configure(rig.settings)
    events: list[dict[str, Any]] = []
    out = await run(rig, {"prompt": "What is 17 * 23?", "kind": "agent"}, events)
    assert out.result["output"] == "The answer is 391"
    assert out.result["steps"] == 3
    trace = out.result["tool_calls"]
    assert [t["tool"] for t in trace] == ["calculator", "clock", "calculator"]
    assert trace[0] == {"step": 1, "tool": "calculator", "arguments": '{"expression":"17 * 23"}'}
    assert "division by zero" in trace[2]["error"]
    # every step offered the whole catalog, and the model got each tool's result back
    assert len(fake.requests) == 3
    second, third = tool_messages(fake.requests[1], kind), tool_messages(fake.requests[2], kind)
    assert second[0] == "391" and "UTC" in second[1]
    assert third[-1].startswith("error: ZeroDivisionError")
    # three calls, each booked at once; the result's cost is their sum
    usage = out.result["usage"]
    assert usage["output_tokens"] >= 100 and usage["cost_usd"] > 0
    rows = await rig.ledger.store.read(
        lambda c: c.execute("SELECT count(*), sum(cost_usd) FROM usage").fetchone()
    )
    assert rows[0] == 3 and rows[1] == pytest.approx(usage["cost_usd"], rel=1e-6)
    assert out.bills == ()  # already in the ledger: not booked twice with the result
    assert {"step": 1, "phase": "tool", "tool": "calculator"} in events
    assert {"step": 3, "phase": "thinking"} in events


async def test_only_the_allowed_tools_are_offered_and_run(
    rig_factory: Any,
    fake: FakeProvider,
) -> None:
    fake.push(tool_calls("openai", ("clock", {}), ("rm_rf", {})), openai_stream("done"))
    rig = await rig_factory({"providers": {"main": cloud("openai", fake)}})
    out = await run(rig, {"prompt": "hi", "kind": "agent", "tools": ["calculator"]})
    offered = [t["function"]["name"] for t in fake.requests[0]["json"]["tools"]]
    assert offered == ["calculator"]
    results = tool_messages(fake.requests[1], "openai")
    assert results[0].startswith("error: no tool named 'clock'")
    assert results[1].startswith("error: no tool named 'rm_rf'; the tools here are: calculator")
    assert out.result["output"] == "done"


async def test_step_limit_fails_the_task_and_keeps_its_spend(
    rig_factory: Any,
    fake: FakeProvider,
) -> None:
    fake.default = tool_calls("openai", ("clock", {}))
    rig = await rig_factory(
        {"providers": {"main": cloud("openai", fake)}, "agent": {"max_steps": 3}}
    )
    with pytest.raises(ProviderError) as err:
        await run(rig, {"prompt": "loop forever", "kind": "agent"})
    assert err.value.failure == Failure.bad_request and err.value.code == "step_limit"
    assert "3 steps (agent.max_steps)" in err.value.message
    assert len(fake.requests) == 3
    count = await rig.ledger.store.read(
        lambda c: c.execute("SELECT count(*) FROM usage").fetchone()
    )
    assert count[0] == 3


async def test_a_step_fails_over_to_the_next_provider(rig_factory: Any) -> None:
    a, b = FakeProvider(), FakeProvider()
    try:
        a.push(tool_calls("openai", ("calculator", {"expression": "2+2"})))
        a.default = error(500, {"error": {"message": "upstream broke"}})
        b.default = openai_stream("four")
        conf = {"providers": {"first": cloud("openai", a), "second": cloud("openai", b)}}
        rig = await rig_factory(conf)
        out = await run(rig, {"prompt": "2+2?", "kind": "agent"})
        assert out.result["output"] == "four"
        assert out.route is not None and out.route.provider == "second"
        assert "failed over from first" in out.route.reason
        # the second provider got the whole conversation, with the first one's tool call
        assert tool_messages(b.requests[0], "openai") == ["4"]
    finally:
        a.close()
        b.close()


async def test_agent_steps_never_go_to_a_provider_without_tools(rig_factory: Any) -> None:
    a, plain, b = FakeProvider(), FakeProvider(), FakeProvider()
    try:
        a.default = error(500, {"error": {"message": "upstream broke"}})
        plain.default = openai_stream("I cannot call tools")
        b.default = openai_stream("four")
        conf = {
            "providers": {
                "first": cloud("openai", a),
                "plain": {**cloud("openai", plain), "tools": False},
                "second": cloud("openai", b),
            },
            "routing": {"cloud_order": ["first", "plain", "second"]},
        }
        rig = await rig_factory(conf)
        out = await run(rig, {"prompt": "2+2?", "kind": "agent"})
        assert out.result["output"] == "four"
        assert out.route is not None and out.route.provider == "second"
        assert plain.requests == []  # failover passed it by
        # a plain completion may still use it
        done = await run(rig, {"prompt": "hi", "model": "plain/gpt-4o-mini"})
        assert done.result["output"] == "I cannot call tools"
    finally:
        for f in (a, plain, b):
            f.close()


def test_agent_tasks_route_only_to_providers_that_call_tools() -> None:
    plain = ProviderConfig(kind="openai", model="m", tools=False)
    both = Settings(
        providers={"plain": plain, "main": ProviderConfig(kind="openai", model="gpt-4o-mini")},
        routing=RoutingConfig(cloud_order=["plain", "main"]),
    )
    agent = parse_spec({"prompt": "hi", "kind": "agent"})
    assert Router(both).decide(agent).route.provider == "main"
    pinned = parse_spec({"prompt": "hi", "kind": "agent", "tier": "cloud"})
    assert Router(both).decide(pinned).route.provider == "main"
    assert Router(both).decide(parse_spec({"prompt": "hi", "tier": "cloud"})).route.provider == (
        "plain"
    )
    with pytest.raises(SpecError, match="provider 'plain' has `tools = false`") as err:
        Router(both).decide(parse_spec({"prompt": "hi", "kind": "agent", "model": "plain/m"}))
    assert err.value.code == ErrorCode.invalid_request
    only = Settings(providers={"plain": plain})
    with pytest.raises(SpecError, match="no cloud provider that calls tools") as err:
        Router(only).decide(agent)
    assert err.value.code == ErrorCode.provider_unavailable


async def test_the_task_cap_covers_all_steps_together(rig_factory: Any, fake: FakeProvider) -> None:
    # Each step costs $0.0015 (the fake bills 1000 tokens each way) and reserves its worst case
    # (~$0.0005: tool definitions, history, 100 tokens out) first: after two, $0.0002 is left.
    fake.default = tool_calls("openai", ("clock", {}), tokens=1000)
    prices = {"gpt-4o-mini": {"input": 0.5, "output": 1.0}}
    rig = await rig_factory({"providers": {"main": cloud("openai", fake)}, "prices": prices})
    with pytest.raises(ProviderError) as err:
        await run(rig, {"prompt": "hi", "kind": "agent", "max_tokens": 100, "max_cost_usd": 0.0032})
    assert err.value.failure == Failure.budget
    assert len(fake.requests) == 2
    spent = await rig.ledger.store.read(
        lambda c: c.execute("SELECT sum(cost_usd) FROM usage").fetchone()
    )
    assert spent[0] == pytest.approx(0.003)  # 2 x (1000 in x $0.5 + 1000 out x $1.0) / 1M


async def test_a_retried_agent_task_counts_what_its_earlier_attempts_spent(
    rig_factory: Any, fake: FakeProvider
) -> None:
    calls = tool_calls("openai", ("clock", {}), tokens=1000)  # $0.0015 a step, as above
    fake.push(calls, error(500, {"error": {"message": "upstream broke"}}))
    fake.default = calls
    prices = {"gpt-4o-mini": {"input": 0.5, "output": 1.0}}
    rig = await rig_factory({"providers": {"main": cloud("openai", fake)}, "prices": prices})
    spec = {"id": "retried", "prompt": "hi", "kind": "agent", "max_tokens": 100}
    spec["max_cost_usd"] = 0.0032
    with pytest.raises(ProviderError) as first:
        await run(rig, spec)
    assert first.value.failure == Failure.retryable and len(fake.requests) == 2
    # the scheduler's next attempt: $0.0017 of the cap is left, enough for one step, not two
    with pytest.raises(ProviderError) as second:
        await run(rig, spec)
    assert second.value.failure == Failure.budget
    assert len(fake.requests) == 3


async def test_notes_outlive_the_task_that_wrote_them(rig_factory: Any, fake: FakeProvider) -> None:
    fake.push(
        tool_calls("openai", ("remember", {"key": "price.btc", "text": "42000 USD"})),
        openai_stream("noted"),
        tool_calls(
            "openai",
            ("recall", {}),
            ("recall", {"key": "price.btc"}),
            ("recall", {"key": "nope"}),
            ("remember", {"key": "../etc", "text": "x"}),
        ),
        openai_stream("it was 42000 USD"),
    )
    rig = await rig_factory({"providers": {"main": cloud("openai", fake)}})
    await run(rig, {"id": "first", "prompt": "note the price", "kind": "agent"})
    out = await run(rig, {"id": "second", "prompt": "what was it?", "kind": "agent"})
    assert out.result["output"] == "it was 42000 USD"
    listed, text, missing, bad = tool_messages(fake.requests[3], "openai")
    assert listed.startswith("price.btc (written 20") and listed.endswith("UTC): 42000 USD")
    assert text == "42000 USD"
    assert missing == "error: no note named 'nope'; recall without a key lists them"
    assert bad.startswith("error: 'key' is letters, digits")
    notes = NoteStore(rig.ledger.store)
    [note] = await notes.all()
    assert (note.key, note.task_id) == ("price.btc", "first")
    # at most MAX_NOTES keys; an existing key can always be written again
    assert all(await asyncio.gather(*(notes.put(f"k{i}", "x", "t") for i in range(499))))
    assert not await notes.put("one-more", "x", "t")
    assert await notes.put("price.btc", "43000 USD", "third")


# ---- intake and routing ------------------------------------------------------------------


def test_agent_specs_are_checked_at_intake() -> None:
    with pytest.raises(
        SpecError,
        match=r"unknown tool 'shell' \(this box has: calculator, clock, fetch, recall, remember\)",
    ):
        parse_spec({"prompt": "x", "kind": "agent", "tools": ["shell"]})
    with pytest.raises(SpecError, match="tools are for agent tasks: add kind 'agent'"):
        parse_spec({"prompt": "x", "tools": ["clock"]})
    assert parse_spec({"prompt": "x", "kind": "agent", "tools": ["fetch"]}).tools == ["fetch"]
    assert frozenset(CATALOG) == NAMES == {"clock", "calculator", "fetch", "remember", "recall"}


def test_agent_tasks_route_to_the_cloud_only() -> None:
    settings = Settings(providers={"main": ProviderConfig(kind="openai", model="gpt-4o-mini")})
    router = Router(settings)
    spec = parse_spec({"prompt": "hi", "kind": "agent"})
    decision = router.decide(spec)
    assert decision.route.tier == "cloud" and decision.route.reason.startswith("agent task")
    for pin in ({"tier": "local"}, {"model": "local/any"}):
        with pytest.raises(SpecError, match="the local model does not call tools"):
            router.decide(parse_spec({"prompt": "hi", "kind": "agent", **pin}))
    with pytest.raises(SpecError, match="set tier 'cloud' in its task"):
        router.decide(spec, background=True)
    pinned = parse_spec({"prompt": "hi", "kind": "agent", "tier": "cloud"})
    assert router.decide(pinned, background=True).route.provider == "main"
    with pytest.raises(SpecError, match="no cloud provider configured") as err:
        Router(Settings()).decide(spec)
    assert err.value.code == ErrorCode.provider_unavailable


# ---- tools -------------------------------------------------------------------------------


def ctx(**conf: Any) -> Context:
    return Context(AgentConfig(**conf), FetchClient(), NoteStore(Store(Path("/nonexistent"))), "t")


@pytest.mark.parametrize(
    ("expression", "answer"),
    [
        ("17 * 23", "391"),
        ("2 ^ 10", "1024"),
        ("(1 + 2) / 4", "0.75"),
        ("sqrt(2) * sqrt(2) > 1.99", None),
        ("round(pi, 3)", "3.142"),
        ("max(3, -7, 11) % 4", "3"),
        ("-(2 ** 3)", "-8"),
    ],
)
async def test_calculator(expression: str, answer: str | None) -> None:
    if answer is None:  # a comparison is not arithmetic
        with pytest.raises(Exception, match="not allowed in an expression"):
            await calculator({"expression": expression}, ctx())
        return
    assert await calculator({"expression": expression}, ctx()) == answer


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("__import__('os').system('true')", "not allowed in an expression"),
        ("open('/etc/passwd')", "not allowed in an expression"),
        ("(1).__class__", "not allowed in an expression"),
        ("9 ** 9 ** 9", "exponent larger than 10000"),
        ("10 ** 5000 * 10 ** 5000", "too large"),
        ("'a' * 3", "only numbers are allowed"),
        ("log(-1)", "ValueError"),
        ("1 +", "not an arithmetic expression"),
    ],
)
async def test_calculator_refuses(expression: str, why: str) -> None:
    with pytest.raises(Exception, match=why):
        await calculator({"expression": expression}, ctx())


async def test_clock() -> None:
    text = await clock({"timezone": "Asia/Tokyo"}, ctx())
    assert "+09:00 (JST)" in text and "UTC 20" in text
    with pytest.raises(Exception, match="unknown time zone 'Mars/Base'"):
        await clock({"timezone": "Mars/Base"}, ctx())


def test_fetch_host_patterns() -> None:
    allow = ["127.0.0.1", "*.example.com"]
    assert host_allowed("127.0.0.1", allow)
    assert host_allowed("api.example.com", allow) and host_allowed("A.B.Example.COM.", allow)
    assert not host_allowed("example.com", allow)  # the pattern is for subdomains
    assert not host_allowed("evilexample.com", allow)
    assert not host_allowed("localhost", allow)


PAGES = {
    "/big": ("text/plain", b"x" * 5000),
    "/page": (
        "text/html; charset=utf-8",
        b"<html><head><title>t</title><style>p {color: red}</style></head><body>"
        b"<script>var secret = 1;</script><h1>Forecast</h1><p>Sunny,\n   21 &deg;C</p>"
        b"<ul><li>Wind: 3 m/s</li><li>Rain: 0 %</li></ul></body></html>",
    ),
}


class _Pages(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("location", "http://127.0.0.1/elsewhere")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        kind, body = PAGES.get(self.path, ("text/plain; charset=utf-8", b"Tomorrow: sunny, 21 C"))
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def pages() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_fetch(pages: str) -> None:
    from agentbox.agent.tools import fetch  # noqa: PLC0415

    port = int(pages.rsplit(":", 1)[1])
    # The page server is on loopback: only the owner's explicit allow lets fetch reach it.
    inside = {"fetch_allow_private": ["127.0.0.1"], "fetch_ports": [port]}
    allowed = ctx(fetch_allow=["127.0.0.1"], fetch_max_bytes=1000, **inside)
    text = await fetch({"url": f"{pages}/forecast"}, allowed)
    assert text == "HTTP 200; content-type: text/plain; charset=utf-8\n\nTomorrow: sunny, 21 C"
    page = await fetch({"url": f"{pages}/page"}, allowed)
    assert page.endswith("\n\nForecast\nSunny, 21 °C\nWind: 3 m/s\nRain: 0 %")
    big = await fetch({"url": f"{pages}/big"}, allowed)
    assert big.endswith("x" * 1000 + "\n[cut at 1000 bytes]")
    moved = await fetch({"url": f"{pages}/moved"}, allowed)
    assert "location: http://127.0.0.1/elsewhere (redirects are not followed)" in moved
    with pytest.raises(Exception, match=r"host '127\.0\.0\.1' is not allowed.*agent\.fetch_allow"):
        await fetch({"url": f"{pages}/forecast"}, ctx())
    with pytest.raises(Exception, match="not a usable URL"):
        await fetch({"url": "file:///etc/passwd"}, allowed)
    closed = ctx(
        fetch_allow=["127.0.0.1"],
        fetch_allow_private=["127.0.0.1"],
        fetch_ports=[9],
        tool_timeout_s=2,
    )
    with pytest.raises(Exception, match="fetch failed: ConnectError"):
        await fetch({"url": "http://127.0.0.1:9/"}, closed)
    await allowed.http.aclose()


# ---- the daemon, as a user runs it -------------------------------------------------------


def test_submit_kind_agent_through_the_daemon(daemons: Any, fake: FakeProvider, pages: str) -> None:
    fake.push(
        tool_calls("openai", ("fetch", {"url": f"{pages}/forecast"})),
        openai_stream("Sunny tomorrow, 21 C."),
    )
    config = f"""
[mqtt]
enabled = false
[agent]
fetch_allow = ["127.0.0.1"]
fetch_allow_private = ["127.0.0.1"]
fetch_ports = [{pages.rsplit(":", 1)[1]}]
[providers.main]
kind = "openai"
base_url = "{fake.url}/v1"
model = "gpt-4o-mini"
"""
    d: Daemon = daemons(config).start()
    task = d.json(
        "submit", "--kind", "agent", "--tool", "fetch", "--wait", "--json", "Weather tomorrow?"
    )
    assert task["state"] == "succeeded", task
    assert task["output"] == "Sunny tomorrow, 21 C."
    assert task["steps"] == 2 and task["tool_calls"][0]["tool"] == "fetch"
    assert task["route"]["tier"] == "cloud"
    assert tool_messages(fake.requests[1], "openai")[0].endswith("Tomorrow: sunny, 21 C")
    # the human view lists the steps; a task asking for a tool on a complete task is refused
    shown = d.cli("tasks", "get", task["id"])
    assert "steps:    2" in shown.stdout and "step 1: fetch" in shown.stdout
    refused = d.cli("submit", "--tool", "clock", "hi", check=False)
    assert refused.returncode != 0 and "tools are for agent tasks" in refused.stderr
    schedule = d.cli(
        "schedules",
        "set",
        "nightly",
        "--every",
        "60",
        "--kind",
        "agent",
        "--prompt",
        "x",
        check=False,
    )
    assert schedule.returncode != 0 and "set tier 'cloud' in its task" in schedule.stderr
    assert json.loads(d.cli("schedules", "list", "--json").stdout) == []
    assert d.cli("schedules", "list").stdout == "no schedules\n"
    listed = d.cli("tasks", "list").stdout
    assert f"{task['id']:<26} succeeded  main       attempts=1" in listed
    fake.push(
        tool_calls("openai", ("remember", {"key": "weather", "text": "sunny\n21 C"})),
        openai_stream("noted"),
    )
    d.cli("submit", "--kind", "agent", "--wait", "Remember the weather.")
    [note] = d.json("notes", "list", "--json")
    assert note["key"] == "weather" and note["text"] == "sunny\n21 C"
    row = d.cli("notes", "list").stdout
    assert row.startswith("weather ") and row.rstrip().endswith(" sunny 21 C")
    assert d.cli("notes", "list", "weather").stdout == "sunny\n21 C\n"
    d.cli("notes", "delete", "weather")
    gone = d.cli("notes", "delete", "weather", check=False)
    assert gone.returncode == 1 and "no note named 'weather'" in gone.stderr
