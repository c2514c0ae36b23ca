"""The bridge in process against a real Mosquitto: a request whose handler never finishes (as
when the process dies after the commit, before the PUBACK) is redelivered on the next
connection and answered once; an intake that stopped moving withholds the watchdog ping."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentbox.mqtt.bridge import Bridge, IntakeStalled
from agentbox.notify import Notifier, watchdog_loop
from agentbox.settings import MqttConfig
from agentbox.tasks.rows import TaskRow
from agentbox.tasks.service import TaskService
from agentbox.tasks.store import Store
from agentbox.vocabulary import TaskSpec
from tests.bridges import bare_bridge, bare_service
from tests.conftest import NotifyListener
from tests.mqtt_peer import Broker, Peer

SUBMIT = "agentbox/v1/box/task/submit"


class HeldStore(Store):
    """While `hold` is set, a submit commits and then never returns: the handler of that
    request stays unfinished, as in a process that died between the commit and the PUBACK."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.hold = True
        self.held = asyncio.Event()
        self.gate = asyncio.Event()

    async def submit(self, spec: TaskSpec, **kw: Any) -> tuple[TaskRow, bool]:
        result = await super().submit(spec, **kw)
        if self.hold:
            self.held.set()
            await self.gate.wait()
        return result


async def until(predicate: Callable[[], object], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@dataclass
class Box:
    broker: Broker
    peer: Peer
    store: HeldStore
    service: TaskService
    bridge: Bridge
    conf: MqttConfig


@pytest.fixture
async def box(short_tmp: Path) -> AsyncIterator[Box]:
    broker = Broker(short_tmp).start()
    peer = Peer(broker.port)
    store = HeldStore(short_tmp / "tasks.db")
    await store.open()
    service = bare_service(store)
    bridge = bare_bridge(store, broker.port, short_tmp, "box", service)
    conf = bridge.conf
    running = asyncio.create_task(bridge.run())
    await until(lambda: bridge.connected)
    try:
        yield Box(broker, peer, store, service, bridge, conf)
    finally:
        store.gate.set()
        await bridge.stop()
        await asyncio.wait_for(running, 10)
        peer.close()
        await store.close()
        broker.stop()


async def test_a_redelivered_request_gets_one_answer_the_final_one(box: Box) -> None:
    box.peer.subscribe("replies/#")
    box.peer.publish(SUBMIT, {"id": "r1", "prompt": "x"}, response_topic="replies/r1")
    await until(box.store.held.is_set)  # committed, never acknowledged
    box.store.hold = False
    box.bridge.reconfigure(box.conf)  # the connection ends; the broker keeps the session
    await until(lambda: box.bridge.received == 2)  # the broker delivered it again (DUP)
    await until(lambda: box.bridge.unfinished == 1)  # the redelivery was served (the old one waits)
    await asyncio.sleep(0.5)  # an answer to the redelivery would have arrived by now
    assert box.peer.on("replies/r1") == [], "a non-final answer to a redelivered request"
    await box.service.cancel("r1")  # the task ends: its one answer, through the outbox
    await until(lambda: box.peer.on("replies/r1"))
    await asyncio.sleep(0.5)  # room for a second answer to show up
    [(_, answer, _, _)] = box.peer.on("replies/r1")
    assert answer["id"] == "r1" and answer["state"] == "cancelled"
    # Asked again on purpose (no DUP) after the end, the same target gets the task as it is.
    box.peer.publish(SUBMIT, {"id": "r1", "prompt": "x"}, response_topic="replies/r1")
    await until(lambda: len(box.peer.on("replies/r1")) == 2)


async def test_an_intake_that_stopped_moving_withholds_the_watchdog_ping(
    box: Box, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = NotifyListener(short_tmp / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    box.bridge.stall_s = 1.0

    async def healthy() -> None:
        await box.store.ping()
        box.bridge.check_intake()

    watchdog = asyncio.create_task(watchdog_loop(Notifier(), healthy))
    try:
        await until(lambda: len(listener.times("WATCHDOG=1")) >= 3)  # idle intake: healthy
        box.bridge.check_intake()
        box.peer.publish(SUBMIT, {"id": "s1", "prompt": "x"})
        await until(box.store.held.is_set)  # a request that never finishes
        stalled: list[IntakeStalled] = []

        def check() -> bool:
            try:
                box.bridge.check_intake()
            except IntakeStalled as exc:
                stalled.append(exc)
            return bool(stalled)

        await until(check)
        assert "1 request(s) unfinished" in str(stalled[0])
        await asyncio.sleep(0.3)  # a ping already on its way arrives
        pings = len(listener.times("WATCHDOG=1"))
        await asyncio.sleep(1.5)  # several periods of 0.2 s
        assert len(listener.times("WATCHDOG=1")) == pings, "pinged while intake was stuck"
        box.store.gate.set()  # it moves again: the pings come back
        await until(lambda: len(listener.times("WATCHDOG=1")) > pings)
    finally:
        watchdog.cancel()
        listener.close()
