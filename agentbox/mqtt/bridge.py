"""The MQTT bridge: availability, task requests and replies, and the outbox, on aiomqtt 2.x.

Delivery: requests are acknowledged (PUBACK) only after the task is committed, by manual
acknowledgement on the paho client underneath aiomqtt, in the order they arrived; the session is
persistent (fixed client id, clean_start off, session expiry), so a request not yet acknowledged
when the box dies comes back after the restart. Events and results leave through the store's
outbox and are deleted only after the broker acknowledged them.

Each connection is a `Link`: its client, its publisher and its intake window (requests awaiting
PUBACK, intake.py). When it ends, its unacknowledged publishes fail at once (paho would never
report them), so the handlers waiting on them finish, return their permits and leave their
requests unacknowledged for the broker to deliver again; the next connection starts with an
empty PUBACK queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes

from agentbox import keys
from agentbox.health import Health
from agentbox.mqtt import intake, paho_adapter, reports
from agentbox.mqtt.connect import client_for, describe_error, properties
from agentbox.mqtt.discovery import announce, unannounce
from agentbox.mqtt.payloads import encode
from agentbox.mqtt.publisher import Acked, Publisher, settled
from agentbox.mqtt.refusals import Refusals
from agentbox.mqtt.requests import Requests, send_reply
from agentbox.mqtt.topics import Topics
from agentbox.operations import Table
from agentbox.settings import MqttConfig
from agentbox.tasks.hub import Follower, Hub, Item, Note
from agentbox.tasks.ops import task_ops
from agentbox.tasks.rows import Event, targets
from agentbox.tasks.service import TaskService
from agentbox.tasks.store import Store
from agentbox.tasks.writer import StoreError
from agentbox.update.remote import RemoteUpdates

log = logging.getLogger("agentbox.mqtt")
SESSION_EXPIRY_S = 7 * 86400
MAX_BACKOFF_S = 60.0
IN_FLIGHT = intake.RECEIVE_MAXIMUM  # requests handled at once (QoS 0 ones included)
DRAIN_BATCH = 200
UPDATE_POLL_S = 2.0  # how often update.json (written by the root updater) is looked at
# Requests unfinished this long with none finishing means intake is stuck: the watchdog ping
# stops. Above the keepalive's detection of a dead broker (1.5 x 30 s), which ends a link anyway.
STALL_S = 90.0


class IntakeStalled(Exception):
    """Requests wait and none has finished for too long."""


@dataclass
class Link:
    """One connection to the broker and what belongs to it alone."""

    client: aiomqtt.Client
    pub: Publisher
    window: intake.Window

    def close(self) -> None:
        """Fail what waits for this connection's PUBACKs; its requests stay unacknowledged."""
        self.pub.close()
        self.window.close()


class Bridge:
    def __init__(
        self,
        conf: MqttConfig,
        *,
        device_id: str,
        service: TaskService,
        store: Store,
        keystore: keys.KeyStore,
        hub: Hub | None = None,
        info: Callable[[], dict[str, Any]],
        health: Health | None = None,
        ops: Table | None = None,
        updates: RemoteUpdates | None = None,
    ) -> None:
        self.conf = conf
        self.device_id = device_id
        self.topics = _topics(conf, device_id)
        self.client_id = f"agentbox-{device_id}"
        self.service = service
        self.store = store
        self.hub = hub if hub is not None else store.hub  # the drain follows its events
        self.keystore = keystore
        self.info = info
        self.health = health
        self.requests = Requests(
            conf,
            self.topics,
            device_id,
            service=service,
            store=store,
            ops=ops or Table(task_ops(service)),  # what the request topics call
            keystore=keystore,
        )
        self.updates = updates
        self.connected = False
        self.session = 0
        self.received = 0
        self.dropped = 0  # QoS 0 messages dropped with the intake queue full
        self.intake_open = True
        self._stopping = asyncio.Event()
        self._health_now = asyncio.Event()  # Home Assistant restarted: report at once
        self._reconnect = asyncio.Event()
        self._next_conf: MqttConfig | None = None
        self._link: Link | None = None
        self._delivered = 0  # the outbox seq up to which the broker acknowledged every event
        self.last_error = ""
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._busy = 0  # requests taken and not finished, every link's
        self._moved_at = time.monotonic()  # when one was last taken or finished
        self.stall_s = STALL_S
        self._refused = Refusals(self.requests, self)

    # ---- connection ------------------------------------------------------------------

    def _connect_link(self) -> Link:
        # The will is written now and sent by the broker whenever the box dies: it cannot know
        # that time, so it has no `ts`; `connected_at` is when the session that died began.
        will = {"state": "offline", "session": self.session, "connected_at": time.time()}
        offline = encode(will)
        connect = properties(PacketTypes.CONNECT)
        connect.SessionExpiryInterval = SESSION_EXPIRY_S
        connect.ReceiveMaximum = intake.RECEIVE_MAXIMUM
        connect.MaximumPacketSize = intake.max_packet_size(self.conf.max_payload_bytes)
        password, _ = keys.resolve(self.keystore, keys.BROKER_KEY)
        client = client_for(
            self.conf,
            password,
            self.client_id,
            will=aiomqtt.Will(self.topics.status, offline, qos=1, retain=True),
            clean_start=False,
            properties=connect,
            keepalive=30,
            timeout=10,
        )
        # aiomqtt 2.x acknowledges on receipt; the paho client underneath can wait for us.
        paho_adapter.manual_acks(client)
        window = intake.attach(client, self._drop, self._refused.refuse)
        self._link = Link(client, Publisher(client), window)
        return self._link

    def _drop(self) -> None:
        self.dropped += 1
        self.requests.warnings.count("qos0_queue_full")

    def load_secret(self) -> None:
        """Read the signing secret (at start and on every reload), not once per request."""
        self.requests.load_secret()

    @property
    def link(self) -> Link | None:
        """The connection being served, if any."""
        return self._link

    @property
    def rejected(self) -> int:
        """Requests answered with a rejection, since start."""
        return self.requests.rejected

    def reconfigure(self, conf: MqttConfig) -> None:
        """New broker settings (or a new password): leave this connection, connect anew."""
        self._next_conf = conf  # applied before the next connect: `stopped` uses the old topics
        self._reconnect.set()

    async def run(self) -> None:
        """Connect, serve, and reconnect with jittered exponential backoff until stop()."""
        delay = 1.0
        self.load_secret()
        while not self._stopping.is_set():
            self._reconnect.clear()
            if self._next_conf is not None:
                self.conf, self._next_conf = self._next_conf, None
                self.topics = _topics(self.conf, self.device_id)
                self.requests.configure(self.conf, self.topics)
                self.last_error = ""
            try:
                self.session = await self.store.bump("mqtt_session")
                link = self._connect_link()
                try:
                    async with link.client as client:
                        await self._connected(client)
                        delay = 1.0
                        await self._serve(link)
                        if self._stopping.is_set() or self._reconnect.is_set():
                            await self._goodbye(client)
                        if self._stopping.is_set():
                            return
                finally:
                    link.close()
            except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
                self._note_error(exc)
            except StoreError as exc:
                log.error("%s", exc)
            finally:
                self.connected = False
            if self._reconnect.is_set():
                delay = 1.0
                continue  # new settings: try them at once
            wait = random.uniform(delay / 2, delay)  # noqa: S311 (jitter)
            delay = min(delay * 2, MAX_BACKOFF_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake(), wait)

    async def _wake(self) -> None:
        """Returns when the bridge should stop waiting: a stop, or new settings."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self._stopping, self._reconnect)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def _note_error(self, exc: BaseException) -> None:
        text = describe_error(self.conf, exc) + "; retrying"
        if text != self.last_error:  # one line per distinct problem, not one per retry
            log.error("%s", text)
            self.last_error = text

    async def _connected(self, client: aiomqtt.Client) -> None:
        online = {"state": "online", "session": self.session, "ts": time.time()}
        await client.publish(self.topics.status, encode(online), qos=1, retain=True)
        info = self.info()
        await client.publish(self.topics.info, encode(info), qos=1, retain=True)
        if self.conf.ha_discovery:
            await announce(client, self.topics, info)
        else:
            await unannounce(client, self.topics)
        for topic in self.topics.subscriptions(ha=self.conf.ha_discovery):
            await client.subscribe(topic, qos=1)
        self.connected = True
        self.last_error = ""
        log.info(
            "connected to %s:%d as %s (session %d)",
            self.conf.host,
            self.conf.port,
            self.client_id,
            self.session,
        )

    async def _serve(self, link: Link) -> None:
        """Receive and drain until the connection drops (raises) or stop() is called."""
        client = link.client
        jobs = [
            asyncio.create_task(self._receive(link), name="mqtt-receive"),
            asyncio.create_task(self._drain(client), name="mqtt-drain"),
            asyncio.create_task(self._wake(), name="mqtt-stop"),
        ]
        if self.health is not None:  # any job that ends ends the connection
            report = reports.health(client, self.topics.health, self.health, self._health_reports())
            jobs.append(asyncio.create_task(report, name="mqtt-health"))
        if self.updates is not None:
            jobs.append(asyncio.create_task(self._report_updates(client, self.updates)))
        try:
            done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
        for job in done:
            exc = job.exception()
            if exc is not None:
                raise exc

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """A clean stop: deliver what is left in the outbox, then say `stopped`."""
        try:
            await asyncio.wait_for(self._drain_once(client), 5)
        except TimeoutError:
            log.warning("outbox not empty at stop; it is sent after the next start")
        if self._leaves_discovery():
            await unannounce(client, self.topics)  # the next connect will not reach it
        stopped = {"state": "stopped", "session": self.session, "ts": time.time()}
        await client.publish(self.topics.status, encode(stopped), qos=1, retain=True)
        log.info("published stopped, disconnecting")

    def _health_reports(self) -> reports.Schedule:
        return reports.Schedule(self.conf.health_interval_s, self.session, self._health_now)

    def _leaves_discovery(self) -> bool:
        """Whether the settings applied next stop announcing where this connection did."""
        nxt = self._next_conf
        if nxt is None or not self.conf.ha_discovery:
            return False
        return not nxt.ha_discovery or nxt.discovery_prefix != self.conf.discovery_prefix

    async def _report_updates(self, client: aiomqtt.Client, updates: RemoteUpdates) -> None:
        """Each change of update.json as an `update` event, and in the retained info."""
        while True:
            event = await asyncio.to_thread(updates.changed)
            if event is not None:
                await client.publish(self.topics.update_events, encode(event), qos=1)
                await client.publish(self.topics.info, encode(self.info()), qos=1, retain=True)
            await asyncio.sleep(UPDATE_POLL_S)

    def close_intake(self) -> None:
        """Stop taking requests; unacknowledged ones come back after the next start."""
        self.intake_open = False

    async def stop(self) -> None:
        self._stopping.set()

    def check_intake(self) -> None:
        """Raise IntakeStalled when requests wait and none was taken or finished for stall_s
        (the watchdog then withholds its ping: a box that looks alive but serves nothing)."""
        idle = time.monotonic() - self._moved_at
        if self._busy and idle > self.stall_s:
            raise IntakeStalled(
                f"MQTT intake stalled: {self._busy} request(s) unfinished,"
                f" none moved in {idle:.0f} s"
            )

    @property
    def unfinished(self) -> int:
        """Requests taken and not finished yet, every link's."""
        return self._busy

    # ---- requests --------------------------------------------------------------------

    async def _receive(self, link: Link) -> None:
        async for message in link.client.messages:
            slot = intake.slot_of(message)
            if not self.intake_open:
                link.window.settle(slot, None)  # the broker keeps it for the next session
                continue
            self.received += 1
            await self._slots.acquire()
            self._busy += 1
            self._moved_at = time.monotonic()
            task = asyncio.create_task(self._handle(link, message))
            task.add_done_callback(functools.partial(self._handled, link=link, slot=slot))

    def _handled(self, task: asyncio.Task[bool], *, link: Link, slot: intake.Slot | None) -> None:
        self._slots.release()
        self._busy -= 1
        self._moved_at = time.monotonic()
        ok = False
        if not task.cancelled():
            if (exc := task.exception()) is not None:
                log.error("request handler failed: %r", exc, exc_info=exc)
            else:
                ok = task.result()
        link.window.settle(slot, 0 if ok else None)  # in order; nothing once the link is gone

    async def _handle(self, link: Link, message: aiomqtt.Message) -> bool:
        """Serve one message; True when it may be acknowledged (it changed what it should)."""
        kind = self.topics.kind(str(message.topic))
        if kind == "ha_status":
            if message.payload == b"online" and self.conf.ha_discovery:
                # Home Assistant (re)started: announce again, and report health at once so
                # its sensors never wait a whole interval in `unknown`.
                await announce(link.client, self.topics, self.info())
                self._health_now.set()
            return True
        return await self.requests.handle(link.pub, message, kind)

    def _publisher(self) -> Publisher:
        """The QoS 1 publisher of the current connection (made with its client)."""
        assert self._link is not None
        return self._link.pub

    # ---- outbox ----------------------------------------------------------------------

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Catch up from the outbox table, then take events (and progress, in its place) from
        the hub as they commit, with no read per batch; from the table again whenever the hub
        dropped this follower for falling behind."""
        while True:
            follower = self.hub.follow()
            try:
                await self._drain_once(client, follower)
                while (items := follower.take()) is not None:
                    if items:
                        await self._publish_events(items)
                    else:
                        await follower.wait()
            finally:
                self.hub.unfollow(follower)

    async def _drain_once(self, client: aiomqtt.Client, follower: Follower | None = None) -> int:
        """Publish what the outbox table holds: after each connect, and at a clean stop. With a
        follower, only the rows before its first event: it has those after, among progress."""
        sent = 0
        while events := await self.store.outbox_fetch(DRAIN_BATCH):
            if follower is not None and follower.first is not None:
                # Read after the follower was told of every commit before the read: a row from
                # its first event on is the follower's to send, in its place.
                events = [e for e in events if e.seq < follower.first]
                if not events:
                    break
            sent += await self._publish_events(events)
        return sent

    async def _publish_events(self, items: Sequence[Item]) -> int:
        """Publish in batches, each deleted from the outbox once the broker acknowledged all of
        it; progress goes out in its place, not waited for. Rows this process already delivered
        (acknowledged, not yet deleted when a connection dropped) are deleted, not sent again."""
        stale = [e.seq for e in items if isinstance(e, Event) and e.seq <= self._delivered]
        if stale:
            await self.store.outbox_delete(stale)
        batch: list[Event] = []
        acks: list[Acked] = []
        sent = 0
        for i, item in enumerate(items, 1):
            if isinstance(item, Note):
                self._send_note(item)
            elif item.seq > self._delivered:
                batch.append(item)
                acks += self._send_event(item)
            if batch and (len(batch) == DRAIN_BATCH or i == len(items)):
                await self._publisher().wait(acks)
                self._delivered = batch[-1].seq
                await self.store.outbox_delete([e.seq for e in batch])
                sent, batch, acks = sent + len(batch), [], []
        return sent

    def _send_note(self, note: Note) -> None:
        """A running task's progress on its event topic, sent at once and kept nowhere: one
        lost while the broker is away is superseded by the next, or by the result."""
        if note.event != "progress" or not note.info:
            return  # a retry is for local watchers only
        body = {"event": "progress", "id": note.task_id, "state": "running", "info": note.info}
        sent = self._publisher().send(self.topics.event(note.task_id), encode(body))
        sent.add_done_callback(settled)

    def _send_event(self, event: Event) -> list[Acked]:
        """An outbox event on its task's topic and, for a result, the answer to the request."""
        out = [self._publisher().send(self.topics.event(event.task_id), event.message)]
        if event.event == "result":
            body = event.body()
            for target in targets(event.reply):  # each request waiting for it
                answer = target or {"topic": self.topics.result(event.task_id)}
                out += send_reply(self._publisher(), answer, body)
        return out


def _topics(conf: MqttConfig, device_id: str) -> Topics:
    return Topics(conf.prefix, device_id, conf.pool, conf.discovery_prefix)
