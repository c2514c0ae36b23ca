"""A task as the store keeps it (TaskRow), its outbox events, and how rows are written."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from agentbox import jsonstrict
from agentbox.vocabulary import FINAL_STATES, State, TaskSpec

# Where a task's final result is answered: one target (a dict, or None for the task's result
# topic), or a list of them once requests that named a known task wait for its result too.
Reply = dict[str, Any] | list[dict[str, Any] | None] | None


def targets(reply: Reply) -> list[dict[str, Any] | None]:
    """Each answer target of a task, in the order the requests came."""
    return list(reply) if isinstance(reply, list) else [reply]


@dataclass(frozen=True)
class TaskRow:
    seq: int
    id: str
    state: State
    lane: str
    priority: int
    spec: TaskSpec
    route: dict[str, Any] | None
    result: dict[str, Any]
    reply: Reply
    source: str
    attempts: int
    max_attempts: int
    cancel_requested: bool
    created_at: float
    deadline_at: float
    next_run_at: float
    started_at: float | None
    finished_at: float | None

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> TaskRow:
        return cls(
            seq=r["seq"],
            id=r["id"],
            state=State(r["state"]),
            lane=r["lane"],
            priority=r["priority"],
            spec=TaskSpec.model_validate_json(r["spec"]),
            route=json.loads(r["route"]) if r["route"] else None,
            result=json.loads(r["result"]) if r["result"] else {},
            reply=json.loads(r["reply"]) if r["reply"] else None,
            source=r["source"],
            attempts=r["attempts"],
            max_attempts=r["max_attempts"],
            cancel_requested=bool(r["cancel_requested"]),
            created_at=r["created_at"],
            deadline_at=r["deadline_at"],
            next_run_at=r["next_run_at"],
            started_at=r["started_at"],
            finished_at=r["finished_at"],
        )

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def body(self) -> dict[str, Any]:
        """The result body (docs/reference.md), JSON-ready, with what is known so far."""
        timings: dict[str, int] = {}
        if self.started_at is not None:
            timings["queued_ms"] = round((self.started_at - self.created_at) * 1000)
            if self.finished_at is not None:
                timings["run_ms"] = round((self.finished_at - self.started_at) * 1000)
        result = self.result
        body = {
            "id": self.id,
            "state": self.state.value,
            "output": result.get("output"),
            "data": result.get("data"),
            "route": self.route,
            "usage": result.get("usage"),
            "attempts": self.attempts,
            "timings": timings,
            "error": result.get("error"),
            "meta": self.spec.meta,
        }
        if "steps" in result:  # an agent task: how many model calls, which tools it called
            body["steps"] = result["steps"]
            body["tool_calls"] = result.get("tool_calls", [])
        return body


@dataclass(frozen=True)
class Event:
    """One outbox row: an event to publish, kept until the broker acknowledged it."""

    seq: int
    task_id: str
    event: str
    message: bytes  # the JSON published on the task's event topic, "event" first
    reply: Reply  # where a result is answered (results only)

    def body(self) -> bytes:
        """The message without its "event" key: the result body a result answers with.
        Cut from the stored text instead of decoding and encoding it again per event."""
        head = b'{"event":' + json.dumps(self.event).encode() + b","
        if self.message.startswith(head):
            return b"{" + self.message[len(head) :]
        body = {k: v for k, v in json.loads(self.message).items() if k != "event"}  # older rows
        return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class OpenReport:
    schema_from: int
    schema_to: int
    requeued: int
    ended: int
    unsettled_calls: int = 0  # cloud calls a dead process left in flight, booked at worst case


COLUMNS = (
    "seq, id, state, lane, priority, spec, route, result, reply, source, attempts, max_attempts,"
    " cancel_requested, created_at, deadline_at, next_run_at, started_at, finished_at"
)


def dumps(value: Any) -> str | None:
    return None if value is None else jsonstrict.dumps(value, separators=(",", ":"))
