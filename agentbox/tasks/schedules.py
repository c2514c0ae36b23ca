"""Recurring jobs: what a schedule is, when it is due, where it is kept.

A run's task id is `<name>.<due time>`, so a run submitted twice (a crash between the submit
and the move to the next due time) is still one task. Runs are background work: they stay on
the local model unless their task spec pins a cloud tier or model.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime
from typing import Any, Literal

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from agentbox.tasks.spec import parse_spec
from agentbox.tasks.writer import Writer
from agentbox.vocabulary import ErrorCode, SpecError, TaskSpec

NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,39}$"  # + "." + due time fits a task id
MAX_SCHEDULES = 200
MIN_EVERY_S = 1.0


class Schedule(BaseModel):
    """A recurring job (README, Schedules: name, cron or every_s, missed-run policy, task spec)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=NAME_PATTERN)
    cron: str | None = Field(default=None, max_length=200)  # five fields, the box's local time
    every_s: float | None = Field(default=None, ge=MIN_EVERY_S, le=366 * 86400)
    missed: Literal["skip", "run_once"] = "run_once"
    task: dict[str, Any]
    _spec: TaskSpec = PrivateAttr()  # `task` parsed once, when the schedule is

    @model_validator(mode="after")
    def _check(self) -> Schedule:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("give exactly one of 'cron' or 'every_s'")
        if self.cron is not None:
            try:
                CronSim(self.cron, datetime.now())
            except CronSimError as exc:
                raise ValueError(f"bad cron expression {self.cron!r}: {exc}") from None
        if "id" in self.task:
            raise ValueError("the task spec has no 'id': each run gets '<name>.<due time>'")
        try:
            self._spec = parse_spec(self.task)
        except SpecError as exc:
            raise ValueError(f"task: {exc.message}") from None
        return self

    @property
    def spec(self) -> TaskSpec:
        """The task each run submits, as parsed (without its run's id and meta)."""
        return self._spec

    def next_due(self, after: float) -> float:
        """The first due time strictly after `after` (cron in local time, DST by the C library)."""
        if self.every_s is not None:
            return after + self.every_s
        assert self.cron is not None
        return next(CronSim(self.cron, datetime.fromtimestamp(after))).timestamp()

    def run_id(self, due: float) -> str:
        return f"{self.name}.{int(due)}"

    def run_spec(self, due: float, missed: int = 0) -> dict[str, Any]:
        meta = {**self.task.get("meta", {}), "schedule": self.name, "due": int(due)}
        if missed:
            meta["missed_runs"] = missed
        return {**self.task, "id": self.run_id(due), "meta": meta}


def parse_schedule(raw: Any) -> Schedule:
    """A schedule from JSON text or a dict; SpecError with the first problem otherwise."""
    try:
        if isinstance(raw, (str, bytes)):
            return Schedule.model_validate_json(raw)
        return Schedule.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise SpecError(ErrorCode.invalid_request, f"{where}: {msg}" if where else msg) from None


class ScheduleStore:
    """Schedules in the task store's file, each with the due time of its next run."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    async def put(self, s: Schedule, now: float | None = None) -> tuple[dict[str, Any], bool]:
        """Create or replace; the next run is counted from now. Returns (entry, created)."""
        at = now or time.time()
        due = s.next_due(at)

        def op(c: sqlite3.Connection) -> bool:
            known = c.execute("SELECT 1 FROM schedules WHERE name = ?", (s.name,)).fetchone()
            if known is None:
                (count,) = c.execute("SELECT count(*) FROM schedules").fetchone()
                if count >= MAX_SCHEDULES:
                    raise SpecError(
                        ErrorCode.invalid_request, f"at most {MAX_SCHEDULES} schedules; delete one"
                    )
            c.execute(
                "INSERT INTO schedules (name, spec, next_at, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE"
                " SET spec = excluded.spec, next_at = excluded.next_at",
                (s.name, s.model_dump_json(exclude_none=True), due, at),
            )
            return known is None

        created = await self.writer.write(op, durable=True)
        return entry(s, due), created

    async def delete(self, name: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            return c.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount == 1

        return await self.writer.write(op, durable=True)

    async def all(self) -> list[tuple[Schedule, float]]:
        def op(c: sqlite3.Connection) -> list[tuple[str, float]]:
            rows = c.execute("SELECT spec, next_at FROM schedules ORDER BY name").fetchall()
            return [(r[0], r[1]) for r in rows]

        rows = await self.writer.read(op)
        return [(Schedule.model_validate_json(spec), due) for spec, due in rows]

    async def advance(self, name: str, was: float, due: float) -> None:
        """Move a schedule on to its next due time, unless it was replaced meanwhile."""

        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE schedules SET next_at = ? WHERE name = ? AND next_at = ?", (due, name, was)
            )

        await self.writer.write(op, durable=True)


def entry(s: Schedule, due: float) -> dict[str, Any]:
    """A schedule as listed: its spec and the next due time."""
    return {**json.loads(s.model_dump_json(exclude_none=True)), "next_at": round(due, 3)}
