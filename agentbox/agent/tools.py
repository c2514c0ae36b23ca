"""The tools an agent task may call: what each offers the model, and what it does.

A tool never raises to the loop: a bad argument or a refused URL comes back as text that
starts with "error:", so the model can correct itself within the task's steps.
"""

from __future__ import annotations

import ast
import datetime as dt
import html.parser
import math
import operator
import re
import zoneinfo
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from agentbox.config import AgentConfig
from agentbox.providers.base import Tool
from agentbox.providers.transport import HttpClient, target


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
    """What tools may use: the agent settings, the daemon's HTTP client, the box's notes and
    the id of the task calling."""

    conf: AgentConfig
    http: HttpClient
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

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
# Bounds that keep one expression to microseconds: no 9**9**9, no million-digit numbers.
_MAX_EXPONENT = 10_000
_MAX_DIGITS = 400


def _number(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError("only numbers are allowed")
    if isinstance(value, int) and value.bit_length() > _MAX_DIGITS * 10 // 3:
        raise ToolError("a number in the expression is too large")
    return value


def _eval(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        return _number(node.value)
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise ToolError(f"exponent larger than {_MAX_EXPONENT}")
        return _number(_BINARY[type(node.op)](left, right))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _number(_FUNCTIONS[node.func.id](*(_eval(a) for a in node.args)))
    raise ToolError(f"not allowed in an expression: {ast.unparse(node)[:60]!r}")


async def calculator(args: dict[str, Any], ctx: Context) -> str:
    """Exact arithmetic, so the model need not do sums in its head."""
    expression = _string(args, "expression", 500)
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
        value = _eval(tree)
    except SyntaxError:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from None
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise ToolError(f"{type(exc).__name__}: {exc}") from None
    return repr(value)


# ---- fetch -------------------------------------------------------------------------------


class _Text(html.parser.HTMLParser):
    """The readable text of an HTML page: no tags, scripts, styles or runs of blank space."""

    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    BREAK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in self.BREAK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:  # a line break in HTML text is a space; tags make lines
            self.parts.append(data.replace("\r", " ").replace("\n", " "))

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.parts).splitlines())
        return "\n".join(line for line in lines if line)


def readable(text: str, content_type: str) -> str:
    """HTML reduced to its text (fewer tokens for the model to pay for); other types as is."""
    if "html" not in content_type.lower():
        return text
    parser = _Text()
    parser.feed(text)
    parser.close()
    return parser.text()


def host_allowed(host: str, allow: list[str]) -> bool:
    """`allow` holds exact host names and `*.example.com` patterns (the domain's subdomains)."""
    host = host.lower().rstrip(".")
    for pattern in (a.lower() for a in allow):
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


async def fetch(args: dict[str, Any], ctx: Context) -> str:
    """GET one URL on a host of agent.fetch_allow; the status, type and (cut) text."""
    url = _string(args, "url", 2000)
    try:
        _, host, _ = target(url).origin
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
        raise ToolError(f"not a usable URL: {exc}") from None
    if not host_allowed(host, ctx.conf.fetch_allow):
        raise ToolError(
            f"host {host!r} is not allowed; the box's owner lists allowed hosts in"
            " agent.fetch_allow"
        )
    limit = ctx.conf.fetch_max_bytes
    timeouts = httpx.Timeout(ctx.conf.tool_timeout_s)
    body = bytearray()
    try:
        async with ctx.http.stream("GET", url, timeouts=timeouts) as response:
            kind = response.headers.get("content-type", "")
            location = response.headers.get("location", "")
            async for piece in response.aiter_bytes():
                body += piece
                if len(body) > limit:
                    break
    except httpx.HTTPError as exc:
        raise ToolError(f"fetch failed: {type(exc).__name__}: {exc}") from None
    head = f"HTTP {response.status_code}; content-type: {kind or 'unknown'}"
    if location:
        head += f"; location: {location} (redirects are not followed)"
    cut = len(body) > limit
    text = readable(bytes(body[:limit]).decode("utf-8", "replace"), kind)
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
NAMES = frozenset(CATALOG)
