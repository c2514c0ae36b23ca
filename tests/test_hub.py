"""The event hub's contract on the real store: committed events in seq order with notes in
their place, a follower dropped when it falls behind (the table has it all), unsubscribing,
local watchers with MQTT off, and the MQTT drain keeping progress in place while it catches up."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentbox.control import ControlServer
from agentbox.control_client import ControlClient
from agentbox.live import Live
from agentbox.tasks.hub import Change, Item, Note
from agentbox.tasks.rows import Event
from agentbox.tasks.scheduler import Scheduler
from agentbox.tasks.service import TaskService
from agentbox.tasks.store import Store
from agentbox.vocabulary import State, TaskSpec
from tests.bridges import bare_bridge
from tests.mqtt_peer import Broker, Peer
from tests.test_scheduler import SETTINGS, ScriptedRunner


async def until(predicate: Callable[[], object], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def submit(store: Store, task_id: str, **kw: Any) -> Any:
    row, _ = await store.submit(
        TaskSpec(prompt="x", id=task_id), lane="local", max_attempts=3, source="t", **kw
    )
    return row


def names(items: list[Item] | None) -> list[tuple[str, str]]:
    assert items is not None
    return [(i.task_id, i.event) for i in items]


async def test_a_follower_gets_committed_events_in_seq_order_and_notes_in_their_place(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "t.db")
    await store.open()
    before = await submit(store, "before")  # committed before following: the table's
    hub = store.hub
    follower = hub.follow()

    def fails(c: sqlite3.Connection) -> None:
        event = Event(0, "x", "accepted", b"{}", None)
        store.staged.append(Change("accepted", before, event))  # as _event would
        raise ValueError("this op is rolled back")

    reply = {"topic": "r", "correlation": None}
    results = await asyncio.gather(
        submit(store, "a"), store.write(fails), submit(store, "b", reply=reply),
        return_exceptions=True,
    )  # fmt: skip
    assert isinstance(results[1], ValueError)
    taken = follower.take()
    assert taken is not None
    stored = (await store.outbox_fetch(10))[1:]  # the same events, in the same order, as stored
    assert [(e.seq, e.task_id, e.message) for e in taken if isinstance(e, Event)] == [
        (e.seq, e.task_id, e.message) for e in stored
    ]
    assert names(taken) == [("a", "accepted"), ("b", "accepted")]
    assert follower.first == stored[0].seq and follower.take() == []
    # A note goes after every event committed before it, before those committed after it.
    a, b = await store.get("a"), await store.get("b")
    assert a is not None and b is not None
    hub.note(b, "progress", {"output_tokens": 1})
    await submit(store, "c", state=State.running)
    hub.note(a, "progress", {"output_tokens": 2})
    taken = follower.take()
    assert names(taken) == [
        ("b", "progress"), ("c", "accepted"), ("c", "running"), ("a", "progress"),
    ]  # fmt: skip
    assert taken is not None and taken[-1] == Note("a", "progress", {"output_tokens": 2})
    await store.close()


async def test_a_follower_that_falls_behind_gets_none_and_the_table_has_it_all(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "t.db")
    await store.open()
    behind = store.hub.follow(limit=2)
    for name in ("a", "b", "c"):
        await submit(store, name)
    assert behind.take() is None  # held nothing past its limit: read the table again
    await submit(store, "d")
    assert behind.take() is None  # for good: a new follower takes over
    fresh = store.hub.follow(limit=2)
    assert [e.task_id for e in await store.outbox_fetch(10)] == ["a", "b", "c", "d"]
    await submit(store, "e")
    assert names(fresh.take()) == [("e", "accepted")]
    await store.close()


async def test_unfollow_and_unwatch_stop_delivery(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    await store.open()
    hub = store.hub
    follower, queue = hub.follow(), hub.watch("a")
    other = hub.watch("a")
    hub.unfollow(follower)
    hub.unwatch("a", queue)
    row = await submit(store, "a")
    hub.note(row, "progress", {"output_tokens": 1})
    assert follower.take() == [] and queue.empty()
    assert [other.get_nowait()[0] for _ in range(2)] == ["accepted", "progress"]
    hub.unwatch("a", other)
    hub.unwatch("a", other)  # twice, or for a task nobody watches: nothing happens
    hub.unwatch("nobody", other)
    await submit(store, "b")
    assert other.empty()
    await store.close()


async def test_local_watchers_get_every_event_with_mqtt_off(tmp_path: Path) -> None:
    """The outbox is off (MQTT disabled): a waiter still sees the task's whole life,
    including a retry and progress, and the outbox table stays empty."""
    store = Store(tmp_path / "t.db", outbox=False)
    await store.open()
    service = TaskService(store, Live.of(SETTINGS))
    scheduler = Scheduler(store, ScriptedRunner(), {"local": 1, "cloud": 3}, 0.05, store.hub)
    service.attach(scheduler)
    queue = service.watch("w")
    async with asyncio.TaskGroup() as tg:
        scheduler.start(tg)
        await asyncio.sleep(0.1)  # the lanes' first claims: the task starts as it is accepted
        await service.submit({"id": "w", "prompt": "flaky:1", "tier": "cloud"}, "test")
        seen: list[tuple[str, dict[str, Any]]] = []
        while not seen or seen[-1][0] != "result":
            seen.append(await asyncio.wait_for(queue.get(), 10))
        await scheduler.stop(1)
    service.unwatch("w", queue)
    assert [e for e, _ in seen] == ["accepted", "running", "retry", "running", "progress", "result"]
    assert seen[2][1]["info"]["retry_in_s"] == 0.05 and seen[4][1]["info"] == {"output_tokens": 1}
    assert seen[-1][1]["state"] == "succeeded" and seen[-1][1]["output"] == "done w"
    assert await store.outbox_fetch(10) == []
    await store.close()


async def test_submit_wait_on_the_control_socket_streams_every_event_with_mqtt_off(
    short_tmp: Path,
) -> None:
    store = Store(short_tmp / "t.db", outbox=False)
    await store.open()
    service = TaskService(store, Live.of(SETTINGS))
    scheduler = Scheduler(store, ScriptedRunner(), {"local": 1, "cloud": 3}, 0.05, store.hub)
    service.attach(scheduler)

    server = ControlServer(short_tmp / "c.sock", service)  # the task operations
    await server.start()

    def wait() -> list[dict[str, Any]]:
        spec = {"id": "w", "prompt": "flaky:1", "tier": "cloud"}
        with ControlClient(server.path, timeout=30) as client:
            return list(client.stream("submit", spec=spec, wait=True))

    async with asyncio.TaskGroup() as tg:
        scheduler.start(tg)
        await asyncio.sleep(0.1)  # the lanes' first claims: the task starts as it is accepted
        messages = await asyncio.to_thread(wait)
        await scheduler.stop(1)
    await server.close()
    await store.close()
    # Each event the hub gave the waiter, `accepted` once (the socket adds none of its own).
    assert [m.get("event", m["type"]) for m in messages] == [
        "accepted", "running", "retry", "running", "progress", "reply",
    ]  # fmt: skip
    assert messages[-1]["task"]["state"] == "succeeded"
    assert messages[4]["task"]["info"] == {"output_tokens": 1}


class GatedStore(Store):
    """The first outbox read waits at a gate: the drain is catching up while tasks move."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.at_gate = asyncio.Event()
        self.gate = asyncio.Event()

    async def outbox_fetch(self, limit: int = 100) -> list[Event]:
        if not self.at_gate.is_set():
            self.at_gate.set()
            await self.gate.wait()
        return await super().outbox_fetch(limit)


async def test_the_drain_keeps_progress_in_place_while_it_catches_up(short_tmp: Path) -> None:
    broker = Broker(short_tmp).start()
    peer = Peer(broker.port)
    store = GatedStore(short_tmp / "tasks.db")
    topic = "agentbox/v1/hub/task/t/event"
    try:
        await store.open()
        await submit(store, "old")  # waits in the table from before the bridge
        peer.subscribe("agentbox/v1/hub/task/+/event")
        bridge = bare_bridge(store, broker.port, short_tmp, "hub")
        running = asyncio.create_task(bridge.run())
        await until(store.at_gate.is_set)  # following, and reading the table
        row = await submit(store, "t", state=State.running)
        store.hub.note(row, "progress", {"output_tokens": 7})
        result = {"output": "ok", "usage": {"input_tokens": 1, "output_tokens": 7}}
        await store.finish(row, State.succeeded, result, None)
        store.gate.set()  # the table read now sees t's rows too
        await until(lambda: len(peer.on(topic)) == 4)
        await asyncio.sleep(0.3)  # anything sent twice would have arrived by now
        await bridge.stop()
        await asyncio.wait_for(running, 10)
        events = [body["event"] for _, body, _, _ in peer.on(topic)]
        assert events == ["accepted", "running", "progress", "result"]
        assert len(peer.on("agentbox/v1/hub/task/old/event")) == 1
        assert await store.outbox_fetch(10) == []
    finally:
        peer.close()
        await store.close()
        broker.stop()
