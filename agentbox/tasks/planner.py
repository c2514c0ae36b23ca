"""Fires schedules when due, applies the missed-run policy after downtime, and answers the
schedule ops of the control socket and MQTT."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from agentbox.operations import BOTH, Caller, Empty, Operation, typed_op
from agentbox.tasks.schedules import Schedule, ScheduleStore, entry, parse_schedule
from agentbox.tasks.service import TaskService
from agentbox.tasks.spec import parse_spec
from agentbox.vocabulary import ErrorCode, SpecError, State

log = logging.getLogger("agentbox.schedules")

GRACE_S = 60.0  # a run this late (a busy box, a clock step) still counts as on time
MAX_COUNTED = 10_000  # missed cron runs are counted one by one, up to this many
# Look at the wall clock at least this often: a board without a real-time clock jumps forward
# when NTP sets it after boot, and sleeps are measured on the monotonic clock.
LOOK_S = 60.0
RETRY_S = 5.0  # after a run could not be recorded (the store was unavailable)
SOURCE = "schedule"


@dataclass(frozen=True)
class ScheduleSet:
    schedule: Schedule


@dataclass(frozen=True)
class ScheduleName:
    name: str


class ScheduleReply(TypedDict):
    created: bool
    schedule: dict[str, Any]


class Deleted(TypedDict):
    deleted: str


class ScheduleList(TypedDict):
    schedules: list[dict[str, Any]]


def _schedule_set(req: Mapping[str, Any]) -> ScheduleSet:
    return ScheduleSet(parse_schedule(req.get("schedule")))


class Planner:
    """Every due run becomes a task, or, when its time passed while the box could not run it,
    follows the schedule's policy: `run_once` runs once now for all missed times, `skip` runs
    nothing; both leave a task whose result says how many runs were missed."""

    def __init__(self, schedules: ScheduleStore, service: TaskService) -> None:
        self.schedules = schedules
        self.service = service
        self._changed = asyncio.Event()

    def ops(self) -> list[Operation[Any, Any]]:
        """schedule_set, schedule_delete and schedule_list, on the socket and MQTT."""
        return [
            Operation("schedule_set", _schedule_set, self.op_set, BOTH),
            typed_op("schedule_delete", ScheduleName, self.op_delete, BOTH),
            typed_op("schedule_list", Empty, self.op_list, BOTH),
        ]

    async def op_set(self, req: ScheduleSet, _: Caller) -> ScheduleReply:
        try:
            self.service.route(req.schedule.spec, SOURCE)
        except SpecError as exc:
            # A provider or budget missing today may be there when the run is due.
            if exc.code == ErrorCode.invalid_request:
                raise SpecError(exc.code, f"task: {exc.message}") from None
        listed, created = await self.schedules.put(req.schedule)
        self._changed.set()
        return {"created": created, "schedule": listed}

    async def op_delete(self, req: ScheduleName, _: Caller) -> Deleted:
        if not await self.schedules.delete(req.name):
            raise SpecError(ErrorCode.not_found, f"no schedule named {req.name!r}")
        self._changed.set()
        return {"deleted": req.name}

    async def summary(self) -> dict[str, Any]:
        """How many schedules there are and which runs next (for `status`)."""
        listed = await self.schedules.all()
        if not listed:
            return {"count": 0, "next": None}
        s, due = min(listed, key=lambda item: item[1])
        return {"count": len(listed), "next": {"name": s.name, "at": round(due, 3)}}

    async def op_list(self, _: Empty, __: Caller) -> ScheduleList:
        return {"schedules": [entry(s, due) for s, due in await self.schedules.all()]}

    async def run(self) -> None:
        while True:
            self._changed.clear()
            if not self.service.accepting:  # stopping: no new runs; the daemon ends us soon
                await asyncio.sleep(RETRY_S)
                continue
            now = time.time()
            dues = []
            for schedule, due in await self.schedules.all():
                dues.append(await self._fire(schedule, due, now) if due <= now else due)
            wait = min(max(min(dues, default=now + LOOK_S) - time.time(), 0.0), LOOK_S)
            try:
                async with asyncio.timeout(wait):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def _fire(self, s: Schedule, due: float, now: float) -> float:
        """One due schedule: its run, or its missed runs by policy; returns when to look next."""
        missed, last = _missed(s, due, now)
        try:
            if missed == 0:
                await self._submit(s, s.run_spec(due))
            elif s.missed == "run_once":
                log.warning("schedule %s: %d run(s) missed; running once now", s.name, missed)
                await self._submit(s, s.run_spec(last, missed))
            else:
                log.warning("schedule %s: %d run(s) missed; skipped by its policy", s.name, missed)
                text = f"{missed} run(s) missed while the box could not run them (policy skip)"
                await self._record(s, s.run_spec(last, missed), ErrorCode.missed_run, text)
        except Exception:
            log.exception("schedule %s: run at %s not recorded; trying again", s.name, _at(due))
            return now + RETRY_S
        following = s.next_due(now)
        await self.schedules.advance(s.name, due, following)
        return following

    async def _submit(self, s: Schedule, spec: dict[str, Any]) -> None:
        try:
            await self.service.submit(spec, SOURCE)
        except SpecError as exc:  # over budget today, or a pinned provider gone: say so
            log.warning("schedule %s: run %s refused: %s", s.name, spec["id"], exc.message)
            await self._record(s, spec, exc.code, exc.message, State.rejected)

    async def _record(
        self,
        s: Schedule,
        spec: dict[str, Any],
        code: ErrorCode,
        message: str,
        state: State = State.expired,
    ) -> None:
        """A run that will not happen, kept as a finished task so its result is published."""
        await self.service.store.submit(
            parse_spec(spec),
            lane="local",
            max_attempts=0,
            source=SOURCE,
            state=state,
            result={"error": {"code": code.value, "message": message}},
        )


def _missed(s: Schedule, due: float, now: float) -> tuple[int, float]:
    """How many due times up to now cannot each have their own run (0 when only `due` is
    due and not too late), and the latest of them."""
    if s.every_s is not None:
        count = math.floor((now - due) / s.every_s) + 1
        last = due + (count - 1) * s.every_s
    else:
        count, last, t = 0, due, due
        while t <= now and count < MAX_COUNTED:
            count, last, t = count + 1, t, s.next_due(t)
    if count == 1 and now - due <= GRACE_S:
        return 0, due
    return count, last


def _at(t: float) -> str:
    return datetime.fromtimestamp(t).isoformat(timespec="seconds")
