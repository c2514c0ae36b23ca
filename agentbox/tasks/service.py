"""The one intake for tasks: validate, route, commit, wake the scheduler; and watch tasks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agentbox.live import Live
from agentbox.routing.router import Decision
from agentbox.tasks.hub import Hub, Update
from agentbox.tasks.rows import TaskRow
from agentbox.tasks.scheduler import BACKGROUND_SOURCES, Scheduler
from agentbox.tasks.spec import parse_spec
from agentbox.tasks.store import Store
from agentbox.vocabulary import ErrorCode, SpecError, State, TaskSpec

log = logging.getLogger("agentbox.tasks")
# While the disk fails, MQTT intake waits for it (its unacknowledged message waits with it);
# a person at the CLI or console gets a clear error after this long instead.
PATIENT_SOURCES = frozenset({"mqtt", "schedule"})
LOCAL_PATIENCE_S = 5.0


class TaskService:
    """Submit, get, list, cancel and subscribe; the same for the control socket and MQTT."""

    def __init__(
        self,
        store: Store,
        live: Live,
        hub: Hub | None = None,
    ) -> None:
        self.store = store
        self.hub = hub if hub is not None else store.hub  # where watchers get the task's events
        self.live = live  # router, attempts and payload bound as of the last reload
        self.scheduler: Scheduler | None = None
        self.accepting = True
        self.accepted = 0

    def attach(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    @property
    def max_payload_bytes(self) -> int:
        return self.live.settings.mqtt.max_payload_bytes

    def route(self, spec: TaskSpec, source: str) -> Decision:
        """Where the task would run today; SpecError when it cannot."""
        return self.live.router.decide(spec, background=source in BACKGROUND_SOURCES)

    async def submit(
        self,
        raw: bytes | str | dict[str, Any] | TaskSpec,
        source: str,
        reply: dict[str, Any] | None = None,
    ) -> tuple[TaskRow, bool]:
        """Validate (unless already parsed) and commit one task; SpecError if refused."""
        if not self.accepting:
            raise SpecError(
                ErrorCode.provider_unavailable, "the daemon is stopping; submit again shortly"
            )
        parsed = raw if isinstance(raw, TaskSpec) else parse_spec(raw, self.max_payload_bytes)
        spec = parsed.with_id()
        try:
            decision = self.route(spec, source)
        except SpecError as exc:
            # A known id answers with its task even if it could not be routed today.
            known = await self.store.get(spec.id or "")
            if known is not None:
                return known, False
            exc.task_id = spec.id
            raise
        scheduler = self.scheduler
        # An idle lane starts the task in the transaction that accepts it (no claim to wait for).
        start = scheduler is not None and scheduler.reserve(decision.lane)
        try:
            row, created = await self.store.submit(
                spec,
                lane=decision.lane,
                max_attempts=self.live.settings.tasks.max_attempts,
                source=source,
                reply=reply,
                route=decision.route.model_dump(),
                state=State.running if start else State.queued,
                patience=None if source in PATIENT_SOURCES else LOCAL_PATIENCE_S,
            )
        except BaseException:
            if start and scheduler is not None:
                scheduler.unreserve(decision.lane)
            raise
        if created:
            self.accepted += 1
            self.live.router.learn_pin(spec, background=source in BACKGROUND_SOURCES)
        if scheduler is not None:
            if start and created:
                scheduler.start_now(row)
            elif start:
                scheduler.unreserve(decision.lane)
            elif created:
                scheduler.wake(row.lane)
        return row, created

    async def get(self, task_id: str) -> TaskRow | None:
        return await self.store.get(task_id)

    async def list_tasks(self, state: str | None, limit: int) -> list[TaskRow]:
        return await self.store.list_tasks(state, limit)

    async def cancel(self, task_id: str) -> TaskRow | None:
        row = await self.store.cancel(task_id)
        if row is not None and not row.final and self.scheduler is not None:
            self.scheduler.cancel_running(task_id)
        return row

    def watch(self, task_id: str) -> asyncio.Queue[Update]:
        """A queue of (event, body) updates for one task, from the hub, until unwatch()."""
        return self.hub.watch(task_id)

    def unwatch(self, task_id: str, queue: asyncio.Queue[Update]) -> None:
        self.hub.unwatch(task_id, queue)
