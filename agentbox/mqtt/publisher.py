"""QoS 1 publishes straight on the paho client under aiomqtt, one future per message, within
the broker's Receive Maximum.

Why not aiomqtt's publish: it walks every pending call twice per message (a membership test on
a generator and a count for its warning), quadratic when an outbox batch puts hundreds in
flight. Why our own window: paho ignores the Receive Maximum of the broker's CONNACK (a broker
may disconnect a client that exceeds it) and, with its own limit set, rescans its in-flight
messages on every PUBACK. The bridge runs paho unlimited; this window keeps us within the
broker's figure, less a few for aiomqtt's own publishes (status, info, health).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties

from agentbox.mqtt import paho_adapter

log = logging.getLogger("agentbox.mqtt")
Acked = asyncio.Future[None]
RESERVED = 4  # in-flight places left to aiomqtt's own publishes
DEFAULT_RECEIVE_MAXIMUM = 65535  # MQTT 5: what a CONNACK without the property means


class Publisher:
    """Attach before connecting: it learns the broker's Receive Maximum from the CONNACK."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._paho = paho_adapter.paho_client(client)
        self._paho.max_inflight_messages_set(0)  # flow control is ours (see above)
        self.receive_maximum = DEFAULT_RECEIVE_MAXIMUM
        self._in_flight = 0
        self._closed = False
        self._waiting: dict[int, Acked] = {}
        self._queued: deque[tuple[str, bytes, Properties | None, Acked]] = deque()
        previous: Any = self._paho.on_publish  # aiomqtt's own callback

        def on_publish(c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
            fut = self._waiting.pop(mid, None)
            if fut is None:
                previous(c, userdata, mid, reason, props)
                return
            self._in_flight -= 1
            if not fut.done():
                fut.set_result(None)
            self._pump()

        self._paho.on_publish = on_publish
        on_connect: Any = self._paho.on_connect  # aiomqtt's, which drops the properties

        def connected(c: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
            limit = getattr(props, "ReceiveMaximum", None) if props is not None else None
            self.receive_maximum = int(limit or DEFAULT_RECEIVE_MAXIMUM)
            on_connect(c, userdata, flags, reason, props)

        self._paho.on_connect = connected
        on_disconnect: Any = self._paho.on_disconnect  # aiomqtt's

        def disconnected(c: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
            self.close()  # at once: handlers waiting on PUBACKs hold the intake's permits
            on_disconnect(c, userdata, flags, reason, props)

        self._paho.on_disconnect = disconnected

    @property
    def window(self) -> int:
        return max(1, self.receive_maximum - RESERVED)

    def send(self, topic: str, payload: bytes, props: Properties | None = None) -> Acked:
        """Queue one QoS 1 message; the future resolves on the broker's PUBACK (or raises
        MqttError when paho cannot send it; a topic paho refuses is logged and skipped)."""
        fut: Acked = asyncio.get_running_loop().create_future()
        if self._closed:
            _fail(fut)
            return fut
        self._queued.append((topic, payload, props, fut))
        self._pump()
        return fut

    def close(self) -> None:
        """The connection ended: paho of a dropped connection never reports these PUBACKs, so
        fail every message still waiting (and any sent later) instead of leaving its caller hung."""
        self._closed = True
        for fut in [*self._waiting.values(), *(q[3] for q in self._queued)]:
            _fail(fut)
        self._waiting.clear()
        self._queued.clear()
        self._in_flight = 0

    def _pump(self) -> None:
        while self._queued and self._in_flight < self.window:
            topic, payload, props, fut = self._queued.popleft()
            if fut.done():  # its caller gave up
                continue
            try:
                info = self._paho.publish(topic, payload, qos=1, properties=props)
            except ValueError as exc:  # a topic the protocol cannot carry: skip it, say so once
                log.warning("cannot publish on %r: %s", topic[:200], exc)
                fut.set_result(None)
                continue
            if info.rc != paho.MQTT_ERR_SUCCESS:
                fut.set_exception(aiomqtt.MqttCodeError(info.rc, "could not publish"))
            elif info.is_published():
                fut.set_result(None)
            else:
                self._in_flight += 1
                self._waiting[info.mid] = fut

    async def wait(self, sent: list[Acked]) -> None:
        """Until the broker acknowledged all of `sent` (plain futures, no task per message);
        a cancelled caller's messages that were not handed to paho yet are dropped."""
        try:
            for fut in sent:
                await fut
        finally:
            for fut in sent:
                fut.cancel()


def settled(fut: Acked) -> None:
    """For a message nobody waits for: retrieve its outcome so asyncio does not warn."""
    if not fut.cancelled():
        fut.exception()


def _fail(fut: Acked) -> None:
    if not fut.done():
        fut.set_exception(aiomqtt.MqttError("the connection ended before the broker acknowledged"))
        fut.exception()  # retrieved here: a caller that gave up must not make asyncio warn
