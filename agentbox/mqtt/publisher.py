"""QoS 1 publishes straight on the paho client under aiomqtt, one future per message.

Why: aiomqtt's publish walks every pending call twice per message (a membership test on a
generator and a count for its warning), which is quadratic when an outbox batch puts hundreds
in flight. Here a PUBACK resolves its message's future in O(1); aiomqtt's own publishes
(status, info, health) still go through aiomqtt and its callback.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties

Acked = asyncio.Future[None]


class Publisher:
    def __init__(self, client: aiomqtt.Client) -> None:
        self._paho = client._client
        self._waiting: dict[int, asyncio.Future[None]] = {}
        previous: Any = self._paho.on_publish  # aiomqtt's own callback

        def on_publish(c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
            fut = self._waiting.pop(mid, None)
            if fut is None:
                previous(c, userdata, mid, reason, props)
            elif not fut.done():
                fut.set_result(None)

        self._paho.on_publish = on_publish

    def send(self, topic: str, payload: bytes, props: Properties | None = None) -> Acked:
        """Hand one QoS 1 message to paho now; the future resolves on the broker's PUBACK
        (raises MqttError when the message cannot be sent)."""
        info = self._paho.publish(topic, payload, qos=1, properties=props)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "could not publish")
        fut: Acked = asyncio.get_running_loop().create_future()
        if info.is_published():
            fut.set_result(None)
        else:
            self._waiting[info.mid] = fut
        return fut

    async def publish(self, topic: str, payload: bytes, props: Properties | None = None) -> None:
        """Publish at QoS 1 and return once the broker acknowledged it (a dropped connection
        cancels the waiting caller)."""
        await self.wait([self.send(topic, payload, props)])

    async def wait(self, sent: list[Acked]) -> None:
        """Until the broker acknowledged all of `sent`; plain futures, no task per message."""
        try:
            for fut in sent:
                await fut
        finally:
            for fut in sent:
                fut.cancel()  # no-op when done; forgets the rest when the caller is cancelled
