"""A model driven by an attacker, through the agent tools: the event loop keeps ticking under
hostile arithmetic and pages, tool calls per answer are capped, fetch reaches only public
addresses and allowed ports, and a failed agent task still shows what it spent."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
import time
from collections.abc import Awaitable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from agentbox.agent import addresses
from agentbox.agent.pagetext import readable
from agentbox.agent.tools import Context, FetchClient, calculator, fetch, origin, pinned
from agentbox.settings import AgentConfig
from agentbox.tasks.notes import NoteStore
from agentbox.tasks.store import Store
from tests.conftest import NO_MQTT, Daemon
from tests.fakes import FakeProvider, openai_stream, tool_calls
from tests.test_agent import cloud, run, tool_messages

T = TypeVar("T")
HOSTILE = "(9**400)**10000"  # about 2 s of one C call each, unbounded; 24 of them blocked ~40 s
# A gap the loop never shows when it is free, far below one hostile call.
FREE_LOOP_S = 1.0


async def max_gap(work: Awaitable[T]) -> tuple[T, float]:
    """Run `work` while a ticker measures the longest time the event loop did not run it."""
    worst = 0.0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal worst
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            worst, last = max(worst, now - last), now

    ticker = asyncio.create_task(tick())
    try:
        result = await work
    finally:
        done.set()
        await ticker  # its last tick measures a block at the very end of the work
    return result, worst


def ctx(**conf: Any) -> Context:
    return Context(AgentConfig(**conf), FetchClient(), NoteStore(Store(Path("/nonexistent"))), "t")


# ---- item 3: the calculator and the loop --------------------------------------------------


async def test_hostile_arithmetic_in_one_answer_leaves_the_loop_free(
    rig_factory: Any, fake: FakeProvider
) -> None:
    fake.push(
        tool_calls("openai", *[("calculator", {"expression": HOSTILE})] * 24),
        openai_stream("gave up"),
    )
    rig = await rig_factory({"providers": {"main": cloud("openai", fake)}})
    out, gap = await max_gap(run(rig, {"prompt": "compute", "kind": "agent"}))
    print(f"loop gap during 24 hostile calculator calls: {gap * 1000:.0f} ms")
    assert gap < FREE_LOOP_S, f"the event loop stood still for {gap:.1f} s"
    assert out.result["output"] == "gave up"
    answers = tool_messages(fake.requests[1], "openai")
    assert len(answers) == 24  # every call id gets an answer, as the APIs require
    assert all(a.startswith("error: the result would be too large") for a in answers[:10])
    assert all("at most 10 tools (agent.max_tool_calls)" in a for a in answers[10:])


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        (HOSTILE, "the result would be too large"),
        ("2 ** 5000", "the result would be too large"),
        ("(10 ** 300) * (10 ** 300)", "the result would be too large"),
        ("round(1, -10 ** 300)", r"round\(\) takes at most 400 digits"),
        ("-" * 400 + "1", ""),  # deep nesting: refused or computed, never a crash
    ],
)
async def test_calculator_refuses_before_computing(expression: str, why: str) -> None:
    if not why:
        try:
            assert await calculator({"expression": expression}, ctx()) == "1"
        except Exception as exc:
            assert "nested too deeply" in str(exc)
        return
    with pytest.raises(Exception, match=why):
        await calculator({"expression": expression}, ctx())


async def test_calculator_still_does_big_exact_sums() -> None:
    assert await calculator({"expression": "2 ** 1000 % 1000007"}, ctx()) == str(2**1000 % 1000007)
    assert await calculator({"expression": "round(2.5 ** 10, 2)"}, ctx()) == "9536.74"


# ---- item 3: hostile pages ---------------------------------------------------------------

# html.parser on Python 3.11 takes time in the square of unclosed tags: this page (30 kB,
# under the default fetch_max_bytes) cost it 14 s of CPU on the event loop.
HOSTILE_PAGE = b"<a " * 10_000
PAGES = {
    "/hostile": ("text/html", HOSTILE_PAGE),
    "/page": ("text/html", b"<p>Sunny</p><script>x</script><li>21 &deg;C"),
    "/forecast": ("text/plain", b"Tomorrow: sunny"),
}


class _Pages(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        kind, body = PAGES.get(self.path, ("text/plain", self.headers.get("host", "").encode()))
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def pages() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def reachable(port: int, **conf: Any) -> Context:
    """A context whose fetch may reach the loopback page server (the owner allowed it)."""
    return ctx(
        fetch_allow=["127.0.0.1", "localhost"],
        fetch_allow_private=["127.0.0.0/8", "::1"],
        fetch_ports=[port],
        **conf,
    )


async def test_a_hostile_page_leaves_the_loop_free(pages: int) -> None:
    c = reachable(pages, fetch_max_bytes=len(HOSTILE_PAGE))
    text, gap = await max_gap(fetch({"url": f"http://127.0.0.1:{pages}/hostile"}, c))
    print(f"loop gap while reducing a hostile page: {gap * 1000:.0f} ms")
    assert gap < FREE_LOOP_S, f"the event loop stood still for {gap:.1f} s"
    assert text.startswith("HTTP 200; content-type: text/html")
    await c.http.aclose()


def test_page_text_is_linear_on_unclosed_constructs() -> None:
    # Work counted, not timed: a 4 MiB page of each kind reduces to (almost) nothing.
    for unit in ("<a ", "<a b='", "</a", "<!", "<script>", "<!--", "<"):
        assert len(readable(unit * (4_000_000 // len(unit)), "text/html")) <= 4_000_000
    page = "<head><title>t</title></head><P>a < b &amp; c</P><SCRIPT>x</Script >d<br/>e"
    assert readable(page, "text/html; charset=utf-8") == "a < b & cd\ne"


# ---- item 8: where fetch may connect -----------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("10.1.2.3", "private"),
        ("192.168.1.1", "private"),
        ("::ffff:192.168.1.1", "private"),
        ("2002:c0a8:0101::1", "private"),  # 6to4 of 192.168.1.1
        ("64:ff9b::a01:203", "private"),  # NAT64 of 10.1.2.3
        ("fc00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        ("240.0.0.1", "reserved"),
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
    ],
)
def test_addresses_fetch_may_reach(address: str, kind: str | None) -> None:
    ip = ipaddress.ip_address(address)
    assert addresses.why_not(ip) == kind
    if kind is None:
        addresses.check(ip, [])
        return
    with pytest.raises(addresses.Refused, match=f"is a {kind} address.*fetch_allow_private"):
        addresses.check(ip, [])


def test_allowed_networks_cover_mapped_addresses() -> None:
    allow = addresses.networks(["127.0.0.0/8", "192.168.1.7"])
    for ok in ("127.0.0.1", "::ffff:127.0.0.2", "192.168.1.7"):
        addresses.check(ipaddress.ip_address(ok), allow)
    with pytest.raises(addresses.Refused):
        addresses.check(ipaddress.ip_address("192.168.1.8"), allow)


async def test_an_allowed_name_that_points_inside_is_refused(pages: int) -> None:
    # localhost is on the host list, but it resolves to the box itself.
    inside = ctx(fetch_allow=["localhost", "127.0.0.1"], fetch_ports=[pages])
    with pytest.raises(Exception, match=r"'localhost' refused: .* is a loopback address"):
        await fetch({"url": f"http://localhost:{pages}/forecast"}, inside)
    with pytest.raises(Exception, match=r"'127\.0\.0\.1' refused: 127\.0\.0\.1 is a loopback"):
        await fetch({"url": f"http://127.0.0.1:{pages}/forecast"}, inside)
    # Only 80 and 443 unless the owner says otherwise, before any connection is tried.
    ports = ctx(fetch_allow=["127.0.0.1"], fetch_allow_private=["127.0.0.1"])
    with pytest.raises(Exception, match=f"port {pages} is not allowed.*agent.fetch_ports"):
        await fetch({"url": f"http://127.0.0.1:{pages}/forecast"}, ports)
    # With the owner's explicit allow, the same fetches work.
    c = reachable(pages)
    text = await fetch({"url": f"http://localhost:{pages}/forecast"}, c)
    assert text.endswith("Tomorrow: sunny")
    await c.http.aclose()


async def test_fetch_connects_to_the_checked_address(pages: int) -> None:
    # The name is never looked up again: the connection goes to the address given.
    client = FetchClient()
    url, _, _ = origin(f"http://nothing.invalid:{pages}/who")
    async with pinned(client.get(), url, "127.0.0.1", httpx.Timeout(5.0)) as response:
        assert response.status_code == 200
        assert await response.aread() == f"nothing.invalid:{pages}".encode()
    await client.aclose()


def test_fetch_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"not a network like 192\.168\.1\.0/24"):
        AgentConfig(fetch_allow_private=["192.168.1.0/33"])
    with pytest.raises(ValueError, match="70000 is not a TCP port"):
        AgentConfig(fetch_ports=[443, 70000])
    assert AgentConfig().fetch_ports == [80, 443] and AgentConfig().max_tool_calls == 10


# ---- item 11: a failed agent task's spend ------------------------------------------------


def test_a_failed_agent_task_shows_what_it_spent(daemons: Any, fake: FakeProvider) -> None:
    fake.default = tool_calls("openai", ("clock", {}), tokens=1000)
    config = (
        f"{NO_MQTT}[agent]\nmax_steps = 2\n[providers.main]\nkind = 'openai'\n"
        f"model = 'gpt-4o-mini'\nbase_url = '{fake.url}/v1'\n"
    )
    d: Daemon = daemons(config).start()
    done = d.cli("submit", "--kind", "agent", "--wait", "--json", "loop forever", check=False)
    task = json.loads(done.stdout)
    assert task["state"] == "failed" and task["error"]["code"] == "step_limit"
    usage = task["usage"]
    assert usage is not None, task
    assert usage["input_tokens"] == 2000 and usage["output_tokens"] == 2000
    spent = d.db().execute("SELECT sum(cost_usd) FROM usage").fetchone()[0]
    assert usage["cost_usd"] == pytest.approx(spent) and spent > 0
