"""Runs queued tasks: one loop per lane, bounded concurrency, retries, deadlines and cancel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentbox.providers.base import Failure, ProviderError
from agentbox.routing.runner import Outcome, Progress
from agentbox.tasks.hub import Hub
from agentbox.tasks.rows import TaskRow
from agentbox.tasks.store import Store
from agentbox.tasks.writer import StoreError
from agentbox.vocabulary import ErrorCode, Route, State, TaskSpec

log = logging.getLogger("agentbox.scheduler")
MAX_BACKOFF_S = 300.0
RETRY_AFTER_CAP_S = 60.0
IDLE_POLL_S = 5.0  # a lane looks at its queue at least this often
STOP_PATIENCE_S = 5.0  # how long a stop waits for a failing disk to requeue its tasks


BACKGROUND_SOURCES = frozenset({"schedule"})


class Runner(Protocol):
    async def run(
        self,
        spec: TaskSpec,
        route: Route | None,
        progress: Progress,
        background: bool = False,
    ) -> Outcome:
        """Run one attempt of a task; raise ProviderError on a classified failure."""
        ...


@dataclass
class Lane:
    name: str
    capacity: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    running: dict[int, tuple[TaskRow, asyncio.Task[None]]] = field(default_factory=dict)
    reserved: int = 0  # slots promised to tasks being committed as running (see reserve)
    # Due tasks may wait in the store: true until a claim finds fewer than it had room for.
    backlog: bool = True
    claiming: bool = False  # a claim is in flight: it may fill the free slots itself

    @property
    def free(self) -> int:
        return max(self.capacity - len(self.running) - self.reserved, 0)


def backoff(attempt: int, base: float, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; a provider's retry-after wins, up to 60 s."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), RETRY_AFTER_CAP_S)
    ceiling = min(base * 2 ** max(attempt - 1, 0), MAX_BACKOFF_S)
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 (jitter, not crypto)


class Scheduler:
    """Claims due tasks lane by lane and runs them through the runner."""

    def __init__(
        self,
        store: Store,
        runner: Runner,
        lanes: dict[str, int],
        retry_base_s: float,
        hub: Hub,
    ) -> None:
        self.store = store
        self.runner = runner
        self.retry_base_s = retry_base_s
        self.hub = hub  # told each run's progress and retries (the store tells it the rest)
        self.lanes = {name: Lane(name, cap) for name, cap in lanes.items()}
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self.finished = 0

    def wake(self, lane: str | None = None) -> None:
        for ln in self.lanes.values():
            if lane is None or ln.name == lane:
                ln.backlog = True
                ln.wake.set()

    def reserve(self, lane: str) -> bool:
        """A slot for a new task to start in the transaction that accepts it: only when the
        lane has room and nothing due is waiting, so no queued task is overtaken."""
        ln = self.lanes.get(lane)
        if ln is None or self._stopping or ln.backlog or ln.claiming or ln.free == 0:
            return False
        ln.reserved += 1
        return True

    def unreserve(self, lane: str) -> None:
        ln = self.lanes[lane]
        ln.reserved -= 1
        ln.wake.set()

    def start_now(self, row: TaskRow) -> None:
        """Run a task committed as running on a reserved slot."""
        ln = self.lanes[row.lane]
        ln.reserved -= 1
        self._start(ln, row)

    def _start(self, lane: Lane, row: TaskRow) -> None:
        task = asyncio.create_task(self._run(lane, row), name=f"task-{row.id}")
        lane.running[row.seq] = (row, task)

    def configure(self, capacities: dict[str, int], retry_base_s: float) -> None:
        """A reload's lane widths and retry base; a wider lane starts waiting work at once."""
        self.retry_base_s = retry_base_s
        for name, capacity in capacities.items():
            if name in self.lanes:
                self.lanes[name].capacity = capacity
                self.lanes[name].wake.set()

    def start(self, tg: asyncio.TaskGroup) -> None:
        for lane in self.lanes.values():
            self._loops.append(tg.create_task(self._loop(lane), name=f"lane-{lane.name}"))

    async def _loop(self, lane: Lane) -> None:
        while not self._stopping:
            lane.wake.clear()
            due: float | None = None
            free = lane.free
            lane.claiming = True
            try:
                rows, due = await self.store.claim(lane.name, free, time.time())
                for row in rows:
                    self._start(lane, row)
                lane.backlog = len(rows) == free
                if rows and len(rows) == free:
                    continue  # maybe more are due
            except StoreError as exc:
                log.error("lane %s: %s; retrying in %.0f s", lane.name, exc, IDLE_POLL_S)
            finally:
                lane.claiming = False
            timeout = IDLE_POLL_S if due is None else min(max(due - time.time(), 0.0), IDLE_POLL_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.wake.wait(), timeout)

    async def _run(self, lane: Lane, row: TaskRow) -> None:
        try:
            await self._attempt(row)
        except StoreError as exc:
            # The run's result could not be recorded; the task stays 'running' in the store and
            # is run again after a restart (at least once).
            log.error("task %s: cannot record its result: %s", row.id, exc)
        finally:
            lane.running.pop(row.seq, None)
            if lane.backlog:  # a freed slot matters only to work waiting in the store
                lane.wake.set()

    async def _attempt(self, row: TaskRow) -> None:
        async def progress(info: dict[str, Any]) -> None:
            self.hub.note(row, "progress", info)

        try:
            async with asyncio.timeout(max(row.deadline_at - time.time(), 0.0)):
                route = None if row.route is None else Route.model_validate(row.route)
                outcome = await self.runner.run(
                    row.spec, route, progress, row.source in BACKGROUND_SOURCES
                )
        except TimeoutError:
            await self._end(row, State.expired, ErrorCode.deadline, "deadline passed while running")
            return
        except asyncio.CancelledError:
            if self._stopping:
                raise  # the stop requeues it
            await self._end(row, State.cancelled, ErrorCode.cancelled, "cancelled while running")
            return
        except ProviderError as exc:
            await self._failed(row, exc)
            return
        except Exception as exc:
            log.exception("task %s: unexpected error", row.id)
            await self._end(
                row, State.failed, ErrorCode.internal, f"internal error: {type(exc).__name__}"
            )
            return
        done = await self.store.finish(
            row, State.succeeded, outcome.result, outcome.route, outcome.bills
        )
        self._finished(done)

    async def _failed(self, row: TaskRow, exc: ProviderError) -> None:
        code = {
            Failure.auth: ErrorCode.provider_auth,
            Failure.bad_request: ErrorCode.provider_error,
            Failure.unavailable: ErrorCode.provider_unavailable,
            Failure.budget: ErrorCode.budget_exceeded,
        }.get(exc.failure, ErrorCode.provider_unavailable)
        if exc.code is not None:
            code = ErrorCode(exc.code)
        if exc.hold:
            # routing.offline = "hold": nothing was tried, so no attempt is used up; the
            # deadline still ends the wait.
            at = time.time() + min(exc.retry_after or self.retry_base_s * 5, RETRY_AFTER_CAP_S)
            if at < row.deadline_at:
                error = {"code": code.value, "message": exc.message}
                if await self.store.retry(row, at, error, refund=True):
                    self.lanes[row.lane].backlog = True
                    self.hub.note(row, "retry", {"error": error, "hold": True})
                return
        if exc.failure in (Failure.retryable, Failure.quota) and row.attempts < row.max_attempts:
            delay = backoff(row.attempts, self.retry_base_s, exc.retry_after)
            at = time.time() + delay
            if at < row.deadline_at:
                log.warning(
                    "task %s: attempt %d failed (%s); retrying in %.1f s",
                    row.id,
                    row.attempts,
                    exc.message,
                    delay,
                )
                error = {"code": code.value, "message": exc.message}
                if await self.store.retry(row, at, error):
                    self.lanes[row.lane].backlog = True
                    self.hub.note(row, "retry", {"error": error, "retry_in_s": round(delay, 2)})
                return
        await self._end(row, State.failed, code, exc.message, exc.usage)

    async def _end(
        self,
        row: TaskRow,
        state: State,
        code: ErrorCode,
        message: str,
        usage: dict[str, Any] | None = None,
    ) -> None:
        result: dict[str, Any] = {"error": {"code": code.value, "message": message}}
        if usage is not None:
            result["usage"] = usage
        self._finished(await self.store.finish(row, state, result, None))

    def _finished(self, done: TaskRow | None) -> None:
        if done is not None:
            self.finished += 1
            # One line per success would be most of a busy box's journal (and SD card writes).
            level = {State.succeeded: logging.DEBUG, State.failed: logging.WARNING}.get(
                done.state, logging.INFO
            )
            log.log(
                level,
                "task %s %s after %d attempt(s)%s",
                done.id,
                done.state.value,
                done.attempts,
                f": {done.result['error']['message']}" if done.result.get("error") else "",
            )

    def cancel_running(self, task_id: str) -> bool:
        for lane in self.lanes.values():
            for row, task in lane.running.values():
                if row.id == task_id:
                    task.cancel()
                    return True
        return False

    async def stop(self, grace_s: float) -> int:
        """Stop claiming, let running work finish for `grace_s` seconds, requeue the rest."""
        self._stopping = True
        for loop in self._loops:
            loop.cancel()
        running = [t for lane in self.lanes.values() for _, t in lane.running.values()]
        if running:
            log.info("waiting up to %.0f s for %d running task(s)", grace_s, len(running))
            await asyncio.wait(running, timeout=grace_s)
        left = [(r, t) for lane in self.lanes.values() for r, t in lane.running.values()]
        for _, task in left:
            task.cancel()
        if left:
            await asyncio.gather(*(t for _, t in left), return_exceptions=True)
            try:
                n = await self.store.release([r for r, _ in left], patience=STOP_PATIENCE_S)
            except StoreError as exc:
                # A failing disk must not hold the stop: the next start requeues them anyway.
                log.error("%d unfinished task(s) left running in the store: %s", len(left), exc)
                return 0
            log.info("requeued %d unfinished task(s) for the next start", n)
            return n
        return 0
