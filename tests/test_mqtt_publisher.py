"""The bridge's QoS 1 publisher keeps within the broker's Receive Maximum (paho does not)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiomqtt
import pytest

from agentbox.mqtt import paho_adapter
from agentbox.mqtt.publisher import RESERVED, Publisher
from tests.mqtt_peer import Broker

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("receive_maximum", [6, 30])
async def test_in_flight_stays_within_the_brokers_receive_maximum(
    short_tmp: Path, receive_maximum: int
) -> None:
    broker = Broker(short_tmp, extra=f"max_inflight_messages {receive_maximum}\n").start()
    client = aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5)
    publisher = Publisher(client)
    assert broker.proc is not None
    pid = broker.proc.pid
    try:
        async with client:
            assert publisher.receive_maximum == receive_maximum  # from the CONNACK
            os.kill(pid, signal.SIGSTOP)  # no PUBACK comes back for now
            sent = [publisher.send(f"t/{i}", b"x") for i in range(50)]
            await asyncio.sleep(0.3)
            in_paho = paho_adapter.in_flight(client)
            assert in_paho == receive_maximum - RESERVED
            os.kill(pid, signal.SIGCONT)
            await asyncio.wait_for(publisher.wait(sent), 10)
            assert all(f.done() and not f.cancelled() for f in sent)
            assert not paho_adapter.in_flight(client)
    finally:
        os.kill(pid, signal.SIGCONT)
        broker.stop()


async def test_a_topic_paho_refuses_is_skipped_not_fatal(short_tmp: Path) -> None:
    broker = Broker(short_tmp).start()
    client = aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5)
    publisher = Publisher(client)
    try:
        async with client:
            sent = [publisher.send("bad/+/topic", b"x"), publisher.send("good", b"y")]
            await asyncio.wait_for(publisher.wait(sent), 10)
    finally:
        broker.stop()
