"""The bridge's outbox against a real Mosquitto, in process: an event the broker acknowledged
is not sent again when the connection ends before its outbox row was deleted."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from agentbox.tasks.spec import parse_spec
from agentbox.tasks.store import Store
from tests.bridges import bare_bridge
from tests.mqtt_peer import Broker, Peer


class GatedStore(Store):
    """The first outbox delete waits at a gate, as a slow disk would."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.at_gate = asyncio.Event()
        self.gate = asyncio.Event()

    async def outbox_delete(self, seqs: list[int]) -> None:
        if not self.at_gate.is_set():
            self.at_gate.set()
            await self.gate.wait()
        await super().outbox_delete(seqs)


async def until(predicate: Callable[[], object], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_acknowledged_events_are_not_sent_again_after_a_drop(short_tmp: Path) -> None:
    broker = Broker(short_tmp).start()
    peer = Peer(broker.port)
    store = GatedStore(short_tmp / "tasks.db")
    try:
        await store.open()
        for i in range(5):
            spec = parse_spec({"id": f"t{i}", "prompt": "x"})
            await store.submit(spec, lane="local", max_attempts=1, source="test")
        peer.subscribe("agentbox/v1/gate/task/+/event")
        bridge = bare_bridge(store, broker.port, short_tmp, "gate")
        conf = bridge.conf
        running = asyncio.create_task(bridge.run())
        # The five `accepted` events are published and acknowledged; their delete is held.
        await until(store.at_gate.is_set)
        await until(lambda: len(peer.on("agentbox/v1/gate/task/+/event")) == 5)
        # The connection ends with the rows still in the outbox (new settings: same broker).
        bridge.reconfigure(conf)
        await until(lambda: bridge.session == 2 and bridge.connected)
        await asyncio.sleep(0.5)  # anything sent again would have arrived by now
        await bridge.stop()
        await asyncio.wait_for(running, 10)
        topics = Counter(t for t, *_ in peer.on("agentbox/v1/gate/task/+/event"))
        assert sorted(topics.values()) == [1] * 5, topics
        assert await store.outbox_fetch(10) == []  # the held rows were deleted, not re-sent
    finally:
        peer.close()
        await store.close()
        broker.stop()
