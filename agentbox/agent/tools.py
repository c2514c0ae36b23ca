"""The tools an agent task may call: what each offers the model, and what it does.

A tool never raises to the loop: a bad argument or a refused URL comes back as text that
starts with "error:", so the model can correct itself within the task's steps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import zoneinfo
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from agentbox.agent import addresses, arith
from agentbox.agent.names import NAMES
from agentbox.agent.pagetext import readable
from agentbox.providers.base import Tool
from agentbox.settings import AgentConfig


class ToolError(Exception):
    """A call the tool refuses; the message goes back to the model."""


MAX_NOTES = 500
NOTE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NOTE_CHARS = 4000


@dataclass(frozen=True)
class Note:
    key: str
    text: str
    task_id: str  # the task that wrote it last
    updated_at: float

    def listed(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "text": self.text,
            "task_id": self.task_id,
            "updated_at": round(self.updated_at, 3),
        }


class Notes(Protocol):
    """Where notes are kept (the task store implements it)."""

    async def put(self, key: str, text: str, task_id: str) -> bool: ...

    async def get(self, key: str) -> Note | None: ...

    async def all(self) -> list[Note]: ...


@dataclass(frozen=True)
class Context:
    """What tools may use: the agent settings, the fetch tool's HTTP client (FetchClient),
    the box's notes and the id of the task calling."""

    conf: AgentConfig
    http: FetchClient
    notes: Notes
    task_id: str


Run = Callable[[dict[str, Any], Context], Awaitable[str]]


@dataclass(frozen=True)
class AgentTool:
    tool: Tool
    run: Run


def _string(args: dict[str, Any], name: str, limit: int, required: bool = True) -> str:
    value = args.get(name, "")
    if not isinstance(value, str) or (required and not value):
        raise ToolError(f"'{name}' must be a non-empty string")
    if len(value) > limit:
        raise ToolError(f"'{name}' is longer than {limit} characters")
    return value


# ---- clock -------------------------------------------------------------------------------


async def clock(args: dict[str, Any], ctx: Context) -> str:
    """The current date and time, in the box's zone or a named IANA zone, and in UTC."""
    name = _string(args, "timezone", 64, required=False)
    try:
        zone = zoneinfo.ZoneInfo(name) if name else None
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {name!r}; use an IANA name like Europe/Paris") from None
    now = dt.datetime.now(dt.UTC)
    local = now.astimezone(zone)
    return (
        f"{local.strftime('%A')} {local.isoformat(timespec='seconds')}"
        f" ({local.tzname()}); UTC {now.isoformat(timespec='seconds')}"
    )


# ---- calculator --------------------------------------------------------------------------


async def calculator(args: dict[str, Any], ctx: Context) -> str:
    """Exact arithmetic, so the model need not do sums in its head."""
    try:
        return repr(arith.evaluate(_string(args, "expression", 500)))
    except arith.ArithError as exc:
        raise ToolError(str(exc)) from None


# ---- fetch -------------------------------------------------------------------------------


class FetchClient:
    """The fetch tool's own client, apart from the providers' connections, made on first use
    (its CA bundle costs ~0.2 s and 3 MB at start). No proxy from the environment, no
    redirects, no compression (a small gzip body can inflate to a huge one at once), and no
    kept-alive connection (each is made to the address just checked: `pinned`)."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    def get(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                trust_env=False,
                follow_redirects=False,
                headers={"user-agent": "agentbox", "accept-encoding": "identity"},
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def host_allowed(host: str, allow: list[str]) -> bool:
    """`allow` holds exact host names and `*.example.com` patterns (the domain's subdomains)."""
    host = host.lower().rstrip(".")
    for pattern in (a.lower() for a in allow):
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


def origin(url: str) -> tuple[httpx.URL, str, int]:
    """The URL parsed, its host and port; refuses anything but http(s)."""
    u = httpx.URL(url)
    if u.scheme not in ("http", "https") or not u.host:
        raise httpx.UnsupportedProtocol(f"not an http(s) URL: {u.scheme}://{u.host}")
    return u, u.host, u.port or (443 if u.scheme == "https" else 80)


@asynccontextmanager
async def pinned(
    client: httpx.AsyncClient, url: httpx.URL, address: str, timeouts: httpx.Timeout
) -> AsyncIterator[httpx.Response]:
    """GET `url` over a new connection to exactly `address`: the name is not looked up again
    (it was checked; a second lookup may answer otherwise), while the URL's host still names
    the server for the host header and TLS (SNI and the certificate's name)."""
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    async with client.stream(
        "GET",
        url.copy_with(host=address),
        headers={"host": url.netloc.decode("ascii")},
        timeout=timeouts,
        extensions=extensions,
    ) as response:
        yield response


async def fetch(args: dict[str, Any], ctx: Context) -> str:
    """GET one URL on a host of agent.fetch_allow; the status, type and (cut) text."""
    url = _string(args, "url", 2000)
    try:
        parsed, host, port = origin(url)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
        raise ToolError(f"not a usable URL: {exc}") from None
    if not host_allowed(host, ctx.conf.fetch_allow):
        raise ToolError(
            f"host {host!r} is not allowed; the box's owner lists allowed hosts in"
            " agent.fetch_allow"
        )
    if port not in ctx.conf.fetch_ports:
        raise ToolError(
            f"port {port} is not allowed; the box's owner lists allowed ports in agent.fetch_ports"
        )
    try:
        address = await addresses.resolve(
            host, port, addresses.networks(ctx.conf.fetch_allow_private)
        )
    except addresses.Refused as exc:
        raise ToolError(f"{host!r} refused: {exc}") from None
    limit = ctx.conf.fetch_max_bytes
    timeouts = httpx.Timeout(ctx.conf.tool_timeout_s)
    body = bytearray()
    try:
        async with pinned(ctx.http.get(), parsed, address, timeouts) as response:
            kind = response.headers.get("content-type", "")
            location = response.headers.get("location", "")
            async for piece in response.aiter_raw():
                body += piece
                if len(body) > limit:
                    break
    except httpx.HTTPError as exc:
        raise ToolError(f"fetch failed: {type(exc).__name__}: {exc}") from None
    head = f"HTTP {response.status_code}; content-type: {kind or 'unknown'}"
    if location:
        head += f"; location: {location} (redirects are not followed)"
    cut = len(body) > limit
    # Linear, but up to fetch_max_bytes (4 MiB) of it: a thread keeps the loop ticking.
    text = await asyncio.to_thread(readable, bytes(body[:limit]).decode("utf-8", "replace"), kind)
    if cut:
        text += f"\n[cut at {limit} bytes]"
    return f"{head}\n\n{text}"


# ---- notes -------------------------------------------------------------------------------


def _key(args: dict[str, Any]) -> str:
    key = _string(args, "key", 64)
    if not NOTE_KEY.match(key):
        raise ToolError(
            "'key' is letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return key


async def remember(args: dict[str, Any], ctx: Context) -> str:
    """Keep a note for later tasks (replacing the key's text)."""
    key, text = _key(args), _string(args, "text", NOTE_CHARS)
    if not await ctx.notes.put(key, text, ctx.task_id):
        raise ToolError(f"the box already keeps {MAX_NOTES} notes; reuse a key")
    return f"remembered {key!r} ({len(text)} characters)"


async def recall(args: dict[str, Any], ctx: Context) -> str:
    """One note's text, or with no key the list of keys and when each was written."""
    if not args.get("key"):
        notes = await ctx.notes.all()
        if not notes:
            return "no notes yet"
        return "\n".join(
            f"{n.key} (written {dt.datetime.fromtimestamp(n.updated_at, dt.UTC):%Y-%m-%d %H:%M}"
            f" UTC): {n.text[:60]}"
            for n in notes
        )
    key = _key(args)
    note = await ctx.notes.get(key)
    if note is None:
        raise ToolError(f"no note named {key!r}; recall without a key lists them")
    return note.text


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> Tool:
    schema = {"type": "object", "properties": properties, "required": required}
    return Tool(name, description, {**schema, "additionalProperties": False})


CATALOG: dict[str, AgentTool] = {
    t.tool.name: t
    for t in (
        AgentTool(
            _tool(
                "clock",
                "The current date, weekday and time. Optional IANA time zone; default the box's.",
                {"timezone": {"type": "string", "description": "e.g. Europe/Paris"}},
                [],
            ),
            clock,
        ),
        AgentTool(
            _tool(
                "calculator",
                "Evaluate an arithmetic expression exactly: + - * / // % ** (or ^), parentheses,"
                " pi, e, and sqrt, exp, log, log10, log2, sin, cos, tan, asin, acos, atan, floor,"
                " ceil, abs, round, min, max.",
                {"expression": {"type": "string", "description": "e.g. (17.5 * 3) / sqrt(2)"}},
                ["expression"],
            ),
            calculator,
        ),
        AgentTool(
            _tool(
                "fetch",
                "HTTP GET a web page or API on a host the box's owner allowed; returns the status,"
                " the content type and the text (an HTML page as plain text; cut when long).",
                {"url": {"type": "string", "description": "an http:// or https:// URL"}},
                ["url"],
            ),
            fetch,
        ),
        AgentTool(
            _tool(
                "remember",
                "Keep a note on this box for later tasks (e.g. what you found today, to compare"
                " tomorrow). Writing a key again replaces its text.",
                {
                    "key": {"type": "string", "description": "a short name, e.g. price.btc"},
                    "text": {"type": "string", "description": f"up to {NOTE_CHARS} characters"},
                },
                ["key", "text"],
            ),
            remember,
        ),
        AgentTool(
            _tool(
                "recall",
                "Read a note kept by an earlier task; without a key, list the notes.",
                {"key": {"type": "string", "description": "the note's name; omit to list"}},
                [],
            ),
            recall,
        ),
    )
}
if frozenset(CATALOG) != NAMES:  # one list of names: agent/names.py
    raise RuntimeError(f"agent/names.py and the tool catalogue differ: {sorted(CATALOG)}")
