"""Scheduler and store behaviour against the real SQLite store and a scripted fake provider."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentbox.live import Live
from agentbox.providers.base import Failure, ProviderError
from agentbox.routing.runner import Outcome, Progress
from agentbox.settings import ProviderConfig, Settings
from agentbox.tasks.rows import Event
from agentbox.tasks.scheduler import Scheduler, backoff
from agentbox.tasks.service import TaskService
from agentbox.tasks.store import Store
from agentbox.tasks.writer import StoreError
from agentbox.vocabulary import Route, SpecError, State, TaskSpec


@dataclass
class ScriptedRunner:
    """Behaves as each prompt says: 'ok', 'sleep:S', 'flaky:N' (N retryable failures), 'auth'."""

    order: list[str] = field(default_factory=list)
    active: int = 0
    peak: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    async def run(
        self,
        spec: TaskSpec,
        route: Route | None,
        progress: Progress,
        background: bool = False,
    ) -> Outcome:
        prompt = spec.prompt or ""
        self.order.append(spec.id or "")
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if prompt.startswith("sleep:"):
                await asyncio.sleep(float(prompt.split(":")[1]))
            elif prompt.startswith("flaky:"):
                seen = self.failures.get(spec.id or "", 0)
                if seen < int(prompt.split(":")[1]):
                    self.failures[spec.id or ""] = seen + 1
                    raise ProviderError(Failure.retryable, "503 from upstream", retry_after=0.05)
            elif prompt == "auth":
                raise ProviderError(Failure.auth, "401: key rejected")
            await progress({"output_tokens": 1})
            return Outcome(
                {
                    "output": f"done {spec.id}",
                    "usage": {"input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0},
                },
                route,
            )
        finally:
            self.active -= 1


@dataclass
class Box:
    store: Store
    service: TaskService
    scheduler: Scheduler
    runner: ScriptedRunner

    async def submit(self, prompt: str, **spec: Any) -> str:
        row, _ = await self.service.submit({"prompt": prompt, **spec}, "test")
        return row.id

    async def final(self, task_id: str, timeout: float = 10) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            row = await self.store.get(task_id)
            if row is not None and row.final:
                return row.body()
            await asyncio.sleep(0.01)
        raise AssertionError(f"{task_id} not final")


SETTINGS = Settings(providers={"fake": ProviderConfig(kind="openai", model="m")})


async def make_box(path: Path) -> Box:
    """The real store, service and scheduler around the scripted runner (not started)."""
    store = Store(path)
    await store.open()
    runner = ScriptedRunner()
    service = TaskService(store, Live.of(SETTINGS))
    scheduler = Scheduler(store, runner, {"local": 1, "cloud": 3}, 0.05, store.hub)
    service.attach(scheduler)
    return Box(store, service, scheduler, runner)


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Box]:
    b = await make_box(tmp_path / "t.db")
    async with asyncio.TaskGroup() as tg:
        b.scheduler.start(tg)
        yield b
        await b.scheduler.stop(1)
    await b.store.close()


async def test_priority_order_within_a_lane(box: Box) -> None:
    blocker = await box.submit("sleep:0.3", id="blocker", tier="local")
    await asyncio.sleep(0.05)
    for prio in (1, 9, 5):
        await box.submit("ok", id=f"p{prio}", tier="local", priority=prio)
    await box.final("p1")
    assert box.runner.order == [blocker, "p9", "p5", "p1"]


async def test_a_full_lane_with_due_work_waits_quietly(box: Box) -> None:
    await box.submit("sleep:1.0", id="hog", tier="local")
    for _ in range(5):
        await box.submit("ok", tier="local")
    await asyncio.sleep(0.2)
    before = box.store.commits
    await asyncio.sleep(0.6)  # the lane is full: nothing may poll the store in a loop
    assert box.store.commits - before <= 3
    await box.final("hog")


async def test_an_idle_lane_starts_a_task_in_the_accepting_transaction(box: Box) -> None:
    await asyncio.sleep(0.1)  # the lanes' first claims: nothing waits in the store
    before = box.store.commits
    task_id = await box.submit("ok", tier="cloud")
    assert (await box.final(task_id))["state"] == "succeeded"
    await asyncio.sleep(0.1)
    assert box.store.commits - before == 2  # accepted+running, then the result: no claim
    events = await box.store.outbox_fetch(100)
    assert [e.event for e in events if e.task_id == task_id] == ["accepted", "running", "result"]
    # A busy lane queues instead, and the order of the queue holds.
    slow = [await box.submit("sleep:0.2", tier="cloud") for _ in range(3)]
    low = await box.submit("ok", tier="cloud", priority=1)
    high = await box.submit("ok", tier="cloud", priority=9)
    for t in [*slow, low, high]:
        await box.final(t)
    assert box.runner.order.index(high) < box.runner.order.index(low)
    assert box.runner.peak <= 3


async def test_lane_concurrency_is_bounded(box: Box) -> None:
    ids = [await box.submit("sleep:0.1", tier="cloud") for _ in range(10)]
    for i in ids:
        assert (await box.final(i))["state"] == "succeeded"
    assert box.runner.peak == 3


async def test_retryable_failures_are_retried_with_backoff(box: Box) -> None:
    ok = await box.submit("flaky:2", id="flaky-ok", tier="cloud")
    bad = await box.submit("flaky:5", id="flaky-bad", tier="cloud")
    done = await box.final(ok)
    assert done["state"] == "succeeded" and done["attempts"] == 3
    failed = await box.final(bad)
    assert failed["state"] == "failed" and failed["attempts"] == 3
    assert failed["error"]["message"] == "503 from upstream"


async def test_auth_failure_is_not_retried(box: Box) -> None:
    done = await box.final(await box.submit("auth", tier="cloud"))
    assert done["state"] == "failed" and done["attempts"] == 1
    assert done["error"]["code"] == "provider_auth"


async def test_deadline_while_running_and_while_queued(box: Box) -> None:
    running = await box.submit("sleep:5", id="late", tier="local", deadline_s=0.3)
    queued = await box.submit("ok", id="never", tier="local", deadline_s=0.2)
    assert (await box.final(running))["state"] == "expired"
    never = await box.final(queued)
    assert never["state"] == "expired" and never["error"]["code"] == "deadline"
    assert "never" not in box.runner.order


async def test_cancel_queued_and_running(box: Box) -> None:
    running = await box.submit("sleep:5", id="c-run", tier="local")
    queued = await box.submit("ok", id="c-queued", tier="local")
    await asyncio.sleep(0.1)
    row = await box.service.cancel(queued)
    assert row is not None and row.state == "cancelled"
    await box.service.cancel(running)
    assert (await box.final(running))["state"] == "cancelled"
    assert box.runner.order == ["c-run"]
    assert await box.service.cancel("no-such-task") is None


async def test_known_id_returns_existing_task(box: Box) -> None:
    first = await box.submit("ok", id="dup")
    await box.final(first)
    row, created = await box.service.submit({"prompt": "something else", "id": "dup"}, "test")
    assert not created and row.state == "succeeded"
    assert box.runner.order == ["dup"]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"prompt": "x", "colour": "red"}, "colour: unknown field"),
        ({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}, "exactly one"),
        ({}, "exactly one"),
        ({"prompt": "x", "id": "bad id!"}, "id: String should match"),
        ({"prompt": "x", "priority": 11}, "priority"),
        ({"prompt": "x", "tools": ["shell"]}, "unknown tool 'shell'"),
        ({"prompt": "x", "model": "nowhere/gpt"}, "no provider named 'nowhere'"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ],
)
async def test_bad_specs_are_refused_with_a_clear_message(
    box: Box, spec: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(SpecError) as err:
        await box.service.submit(spec, "test")
    assert err.value.code == "invalid_request"
    assert fragment in err.value.message
    assert await box.store.list_tasks() == []


async def test_events_follow_each_state_change_in_the_outbox(box: Box) -> None:
    task_id = await box.submit("ok", id="ev")
    await box.final(task_id)
    events = [e.event for e in await box.store.outbox_fetch() if e.task_id == "ev"]
    assert events == ["accepted", "running", "result"]


async def test_stop_requeues_unfinished_work_without_charging_an_attempt(tmp_path: Path) -> None:
    b = await make_box(tmp_path / "t.db")
    async with asyncio.TaskGroup() as tg:
        b.scheduler.start(tg)
        row, _ = await b.service.submit({"prompt": "sleep:10", "tier": "local"}, "test")
        await asyncio.sleep(0.2)
        assert await b.scheduler.stop(0.1) == 1
    again = await b.store.get(row.id)
    assert again is not None and again.state == "queued" and again.attempts == 0
    await b.store.close()


async def test_bursts_share_commits(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    await store.open()
    before = store.commits
    spec = TaskSpec(prompt="x")
    await asyncio.gather(
        *(
            store.submit(spec.with_id(), lane="local", max_attempts=3, source="test")
            for _ in range(300)
        )
    )
    assert store.commits - before < 30
    assert len(await store.list_tasks(limit=1000)) == 300
    await store.close()


async def test_one_failing_op_does_not_undo_its_batch(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    await store.open()

    def bad(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO nowhere VALUES (1)")

    spec = TaskSpec(prompt="x")
    results = await asyncio.gather(
        store.submit(spec.with_id(), lane="local", max_attempts=3, source="test"),
        store.write(bad),
        store.submit(spec.with_id(), lane="local", max_attempts=3, source="test"),
        return_exceptions=True,
    )
    assert isinstance(results[1], sqlite3.OperationalError)
    assert len(await store.list_tasks()) == 2
    await store.close()


async def test_prune_keeps_recent_and_live_tasks(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    await store.open()
    old = TaskSpec(prompt="x", id="old")
    await store.submit(
        old,
        lane="local",
        max_attempts=3,
        source="test",
        state=State.succeeded,
        now=time.time() - 10 * 86400,
    )
    await store.submit(TaskSpec(prompt="x", id="live"), lane="local", max_attempts=3, source="test")
    assert await store.prune(time.time(), 7 * 86400, 1000) == 1
    assert [r.id for r in await store.list_tasks()] == ["live"]
    await store.close()


async def test_prune_beyond_keep_max_goes_in_small_transactions(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    await store.open()
    start = time.time() - 3600
    for i in range(234):
        spec = TaskSpec(prompt="x", id=f"done-{i:03d}")
        await store.submit(
            spec, lane="cloud", max_attempts=3, source="test", state=State.succeeded, now=start + i
        )
    await store.submit(TaskSpec(prompt="x", id="live"), lane="cloud", max_attempts=3, source="test")
    before = store.commits
    assert await store.prune(time.time(), 7 * 86400, 100, batch=50) == 134
    assert store.commits - before >= 3  # 134 rows, at most 50 per transaction
    left = sorted(r.id for r in await store.list_tasks(limit=1000))
    assert left == [f"done-{i:03d}" for i in range(134, 234)] + ["live"]
    await store.close()


async def test_closed_store_raises_store_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    await store.open()
    await store.close()
    with pytest.raises(StoreError):
        await store.get("x")


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    assert backoff(1, 2.0, 7.5) == 7.5
    assert backoff(1, 2.0, 600) == 60.0
    first = [backoff(1, 2.0, None) for _ in range(50)]
    fourth = [backoff(4, 2.0, None) for _ in range(50)]
    assert all(1.0 <= x <= 2.0 for x in first) and len(set(first)) > 1
    assert all(8.0 <= x <= 16.0 for x in fourth)
    assert backoff(30, 2.0, None) <= 300


def test_result_body_is_cut_from_the_stored_message_and_older_rows_still_read() -> None:
    new = Event(1, "t", "result", b'{"event":"result","id":"t","state":"succeeded"}', None)
    old = Event(2, "t", "result", b'{"id":"t","state":"succeeded","event":"result"}', None)
    for event in (new, old):
        assert json.loads(event.body()) == {"id": "t", "state": "succeeded"}
