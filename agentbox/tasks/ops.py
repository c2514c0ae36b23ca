"""The task operations of the table: submit, get and cancel (socket and MQTT), list (socket).

A spec is parsed once, here at the table's edge, and given its id there: the socket's waiter
watches that id before the task is committed, and the task service takes the parsed spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from agentbox.operations import BOTH, Caller, Operation, fields_parser, typed_op
from agentbox.tasks.rows import TaskRow
from agentbox.tasks.service import TaskService
from agentbox.tasks.spec import parse_spec
from agentbox.vocabulary import ErrorCode, SpecError, State, TaskSpec

SOURCES = {"socket": "local", "mqtt": "mqtt"}  # a task's `source`, by the transport it came in


@dataclass(frozen=True)
class SubmitRequest:
    spec: TaskSpec = field(metadata={"must": "be a task spec"})
    wait: bool = False  # the socket streams the task's events until its result


@dataclass(frozen=True)
class TaskId:
    id: str


@dataclass(frozen=True)
class ListRequest:
    state: str | None = None
    limit: int = 50


@dataclass(frozen=True)
class Submitted:
    """The task a submit made or found (`created` False: the id was known; nothing runs)."""

    row: TaskRow
    created: bool


@dataclass(frozen=True)
class TaskReply:
    """The task a get or cancel names; `row` None when the box does not know it."""

    id: str
    row: TaskRow | None


class ListReply(TypedDict):
    tasks: list[dict[str, Any]]


def task_ops(service: TaskService) -> list[Operation[Any, Any]]:
    """The task operations on one task service."""

    def spec(raw: Any) -> TaskSpec:
        return parse_spec(raw, service.max_payload_bytes).with_id()

    def states(raw: Mapping[str, Any]) -> ListRequest:
        req = fields_parser(ListRequest)(raw)
        if req.state is not None and req.state not in State.__members__:
            raise SpecError(ErrorCode.invalid_request, f"unknown state {req.state!r}")
        return req

    async def submit(req: SubmitRequest, caller: Caller) -> Submitted:
        row, created = await service.submit(req.spec, SOURCES[caller.transport], caller.reply)
        return Submitted(row, created)

    async def get(req: TaskId, _: Caller) -> TaskReply:
        return TaskReply(req.id, await service.get(req.id))

    async def cancel(req: TaskId, _: Caller) -> TaskReply:
        return TaskReply(req.id, await service.cancel(req.id))

    async def listed(req: ListRequest, _: Caller) -> ListReply:
        rows = await service.list_tasks(req.state, req.limit)
        return {"tasks": [_brief(r) for r in rows]}

    return [
        typed_op("submit", SubmitRequest, submit, BOTH, spec=spec),
        typed_op("get", TaskId, get, BOTH),
        typed_op("cancel", TaskId, cancel, BOTH),
        Operation("list", states, listed),
    ]


def _brief(row: TaskRow) -> dict[str, Any]:
    view = row.body()
    view["created_at"] = row.created_at
    view["lane"] = row.lane
    return view
