"""The one table of operations that every transport calls: the control socket and MQTT.

An operation is a name, a parser that turns a transport's request object into a typed request
(or a SpecError `invalid_request` saying which field is wrong), and a handler. The parts that
own an operation register it (tasks, schedules, notes, routing, the console's settings, update
requests); a transport only maps its own message to a name and a request object, calls the
table, and renders the typed reply in its own wire format.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from agentbox.vocabulary import ErrorCode, SpecError

Transport = Literal["socket", "mqtt"]
SOCKET: frozenset[Transport] = frozenset({"socket"})
MQTT: frozenset[Transport] = frozenset({"mqtt"})
BOTH: frozenset[Transport] = frozenset({"socket", "mqtt"})
Req = TypeVar("Req")
Rep = TypeVar("Rep")


@dataclass(frozen=True)
class Caller:
    """Who asks: the transport, and for MQTT where the final answer goes (kept with a task)."""

    transport: Transport
    reply: dict[str, Any] | None = None


@dataclass(frozen=True)
class Empty:
    """The request of an operation that takes no arguments (other fields are ignored)."""


@dataclass(frozen=True)
class Operation(Generic[Req, Rep]):
    """One named operation; `transports` says who may call it (the socket only by default:
    MQTT reaches only what its topics name)."""

    name: str
    parse: Callable[[Mapping[str, Any]], Req]
    run: Callable[[Req, Caller], Awaitable[Rep]]
    transports: frozenset[Transport] = SOCKET


@dataclass(frozen=True)
class Call(Generic[Req, Rep]):
    """A request parsed for its operation, ready to run."""

    op: Operation[Req, Rep]
    request: Req

    async def run(self, caller: Caller) -> Rep:
        return await self.op.run(self.request, caller)


class Table:
    """Operations by name; each name is registered once."""

    def __init__(self, *groups: Iterable[Operation[Any, Any]]) -> None:
        self._ops: dict[str, Operation[Any, Any]] = {}
        for group in groups:
            self.add(*group)

    def add(self, *ops: Operation[Any, Any]) -> None:
        for op in ops:
            if op.name in self._ops:
                raise ValueError(f"operation {op.name!r} is registered twice")
            self._ops[op.name] = op

    def names(self, transport: Transport) -> list[str]:
        return sorted(n for n, op in self._ops.items() if transport in op.transports)

    def find(self, name: str, transport: Transport) -> Operation[Any, Any]:
        op = self._ops.get(name)
        if op is None or transport not in op.transports:
            raise SpecError(ErrorCode.invalid_request, f"unknown op {name!r}")
        return op

    def request(self, name: str, data: Mapping[str, Any], transport: Transport) -> Call[Any, Any]:
        """The operation and its parsed request; SpecError for an unknown op or bad fields."""
        op = self.find(name, transport)
        return Call(op, op.parse(data))

    async def call(self, name: str, data: Mapping[str, Any], caller: Caller) -> Any:
        return await self.request(name, data, caller.transport).run(caller)


def typed_op(
    name: str,
    request: type[Req],
    run: Callable[[Req, Caller], Awaitable[Rep]],
    transports: frozenset[Transport] = SOCKET,
    **convert: Callable[[Any], Any],
) -> Operation[Req, Rep]:
    """An operation whose request is the dataclass `request`, parsed by its field types."""
    return Operation(name, fields_parser(request, **convert), run, transports)


def fields_parser(
    cls: type[Req], **convert: Callable[[Any], Any]
) -> Callable[[Mapping[str, Any]], Req]:
    """A parser for a dataclass request: each field is checked against its annotation (str,
    int, float, bool, dict, Any, `X | None`), or given to its converter in `convert`, which
    raises SpecError itself. A field's metadata "must" words its error ("be a task spec");
    fields the dataclass does not name are ignored."""
    hints = typing.get_type_hints(cls)
    fields = [
        (
            f.name,
            convert.get(f.name) or _checker(hints[f.name]),
            f.name in convert,
            f.metadata.get("must") or _must(hints[f.name]),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
    ]

    def parse(data: Mapping[str, Any]) -> Req:
        values: dict[str, Any] = {}
        for name, check, converts, must, required in fields:
            if name not in data:
                if required:
                    raise SpecError(ErrorCode.invalid_request, f"{name!r} must {must}")
                continue
            value = data[name]
            if converts:
                value = check(value)
            elif not check(value):
                raise SpecError(ErrorCode.invalid_request, f"{name!r} must {must}")
            values[name] = value
        return cls(**values)

    return parse


def _checker(hint: Any) -> Callable[[Any], bool]:
    """Whether a decoded JSON value fits the annotation; worked out once per field."""
    if hint is Any:
        return lambda _: True
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        options = [_checker(h) for h in typing.get_args(hint)]
        return lambda v: any(check(v) for check in options)
    if hint is type(None):
        return lambda v: v is None
    kind = typing.get_origin(hint) or hint
    if kind in (int, float):  # true is not a number here; an integer is a float
        kinds = (int, float) if kind is float else (int,)
        return lambda v: isinstance(v, kinds) and not isinstance(v, bool)
    return lambda v: isinstance(v, kind)


_WORDS = {str: "be a string", int: "be an integer", float: "be a number", bool: "be true or false"}


def _must(hint: Any) -> str:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        rest = [h for h in typing.get_args(hint) if h is not type(None)]
        if len(rest) == 1:
            return _must(rest[0])
    kind = typing.get_origin(hint) or hint
    return _WORDS.get(kind, "be an object" if kind is dict else "be given")


def daemon_ops(
    status: Callable[[], Awaitable[dict[str, Any]]], reload: Callable[[], Awaitable[str]]
) -> list[Operation[Any, Any]]:
    """`ping`, `status` and `reload` of the control socket."""

    async def ping(_: Empty, __: Caller) -> dict[str, Any]:
        return {"ok": True}

    async def report(_: Empty, __: Caller) -> dict[str, Any]:
        return {"status": await status()}

    async def reread(_: Empty, __: Caller) -> dict[str, Any]:
        return {"message": await reload()}

    return [
        typed_op("ping", Empty, ping),
        typed_op("status", Empty, report),
        typed_op("reload", Empty, reread),
    ]
