"""One MQTT request read and answered: its signature and replay check, its answer target,
its payload, the operation its topic names (on the table the control socket calls too), and
the answer on the request's own connection. The bridge (bridge.py) hands each message here."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes

from agentbox import keys
from agentbox.mqtt.connect import properties
from agentbox.mqtt.payloads import decode, encode, id_of, not_found, rejected
from agentbox.mqtt.publisher import Acked, Publisher
from agentbox.mqtt.ratelog import RateLog
from agentbox.mqtt.signing import ReplayCache, check_signature
from agentbox.mqtt.topics import Topics, reply_refusal
from agentbox.operations import Caller, Table
from agentbox.settings import MqttConfig
from agentbox.tasks.ops import Submitted, TaskReply
from agentbox.tasks.rows import TaskRow, targets
from agentbox.tasks.service import TaskService
from agentbox.tasks.store import Store
from agentbox.tasks.writer import StoreError
from agentbox.vocabulary import ErrorCode, SpecError

log = logging.getLogger("agentbox.mqtt")
HMAC_KEY = "mqtt-hmac"  # the key store entry that signs requests
MAX_WAITING = 16  # answer targets one task's result may have (requests that resent its id)
# A request topic's kind -> (its operation's name, the request field its payload is, if one).
REQUESTS = {"update": ("update_request", None), "submit": ("submit", "spec"),
            "schedule_set": ("schedule_set", "schedule")}  # fmt: skip
Target = dict[str, Any]  # {"topic": ..., "correlation": hex or None}


def send_reply(pub: Publisher, target: Target, body: bytes) -> list[Acked]:
    """`body` to an answer target, with its Correlation Data."""
    props = None
    if target.get("correlation"):
        props = properties(PacketTypes.PUBLISH)
        props.CorrelationData = bytes.fromhex(target["correlation"])
    return [pub.send(target["topic"], body, props)]


class Requests:
    """The request side of a bridge; `configure` follows the bridge's settings."""

    def __init__(
        self,
        conf: MqttConfig,
        topics: Topics,
        device_id: str,
        *,
        service: TaskService,
        store: Store,
        ops: Table,
        keystore: keys.KeyStore,
    ) -> None:
        self.conf, self.topics = conf, topics
        self.device_id = device_id
        self.service = service
        self.store = store
        self.ops = ops
        self.keystore = keystore
        self.hmac_secret: str | None = None
        self.replays = ReplayCache()
        self.warnings = RateLog(log)  # refusals, a flood of them summarised
        self.rejected = 0

    def configure(self, conf: MqttConfig, topics: Topics) -> None:
        self.conf, self.topics = conf, topics

    def load_secret(self) -> None:
        """Read the signing secret (at start and on every reload), not once per request."""
        self.hmac_secret = None
        with contextlib.suppress(keys.KeyStoreError):
            self.hmac_secret = keys.resolve(self.keystore, HMAC_KEY)[0]

    # ---- reading ---------------------------------------------------------------------

    def signature(self, message: aiomqtt.Message, topic: str, raw: bytes) -> str:
        """The request's verified signature; SpecError when it is missing or wrong."""
        device = self.conf.pool if self.topics.pooled(topic) else self.device_id
        return check_signature(self.hmac_secret, message.properties, topic, device, raw)

    def reply_target(self, message: aiomqtt.Message) -> tuple[Target | None, str | None]:
        """The v5 Response Topic as an answer target, or why it is refused."""
        props = message.properties
        topic = getattr(props, "ResponseTopic", None) if props is not None else None
        if topic is None:
            return None, None
        return self.target(topic, getattr(props, "CorrelationData", None))

    def target(self, topic: Any, corr: bytes | None) -> tuple[Target | None, str | None]:
        conf = self.conf
        refusal = reply_refusal(topic, conf.prefix, conf.reply_allow, conf.discovery_prefix)
        if refusal is not None:
            return None, refusal
        return {"topic": topic, "correlation": bytes(corr).hex() if corr else None}, None

    # ---- serving ---------------------------------------------------------------------

    async def handle(self, pub: Publisher, message: aiomqtt.Message, kind: str | None) -> bool:
        """Serve one request; True when it may be acknowledged (it changed what it should)."""
        topic = str(message.topic)
        reply, refusal = self.reply_target(message)
        raw = message.payload if isinstance(message.payload, bytes) else b""
        data: dict[str, Any] = {}
        claimed: str | None = None
        ok = False
        try:
            # Every operation changes or reveals state (schedules spend money too): all signed.
            if self.conf.require_signature:
                signature = self.signature(message, topic, raw)
                if not self.replays.claim(signature):
                    # Dropped without an answer: a replay learns nothing, and a redelivery of
                    # one already served (its PUBACK lost with a connection) is not answered twice.
                    self.warnings.warning("replayed", "dropped a replayed request on %s", topic)
                    ok = True
                    return ok
                claimed = signature
            # schedule/list needs nothing: an empty payload is an empty request.
            empty = kind == "schedule_list" and not raw.strip()
            data = {} if empty else decode(raw, self.conf.max_payload_bytes)
            if reply is None and refusal is None and "reply_to" in data:
                reply, refusal = self.target(data["reply_to"], None)
            if refusal is not None:
                raise SpecError(ErrorCode.invalid_request, refusal)
            if kind == "submit" and claimed is not None and data.get("id") is None:
                # The same signed request sent again (or redelivered after a crash, when the
                # replay cache is gone) names the same task: it never runs twice.
                data["id"] = f"sig-{claimed[:40]}"
            ok = await self._serve(pub, message, kind, data, reply)
        except SpecError as exc:
            self.rejected += 1
            task_id = exc.task_id or id_of(data)
            body = rejected(task_id, str(exc.code), exc.message)
            if kind == "update":
                reply, body = self._update_reply(reply), {"event": "update_request", **body}
            self.warnings.warning(
                str(exc.code),
                "rejected %d-byte message on %s: %s: %s",
                len(raw),
                topic,
                exc.code,
                exc.message,
            )
            ok = await self.respond(pub, reply, task_id, body)
        except StoreError as exc:
            log.error("request on %s not stored (%s); it is redelivered later", topic, exc)
        finally:
            if claimed is not None and not ok:
                self.replays.release(claimed)  # it comes back, and must then be served
        return ok

    async def _serve(
        self,
        pub: Publisher,
        message: aiomqtt.Message,
        kind: str | None,
        data: dict[str, Any],
        reply: Target | None,
    ) -> bool:
        """The operation the topic names; False when its answer could not be sent."""
        if kind is None:
            return True
        if kind != "submit":
            data.pop("reply_to", None)  # where to answer, not part of the request
        name, field = REQUESTS.get(kind, (kind, None))
        answer = await self.ops.call(name, {field: data} if field else data, Caller("mqtt", reply))
        if isinstance(answer, Submitted):  # a new task's one answer is its result, later
            dup = getattr(message, "dup", False)
            return answer.created or await self._resent(pub, answer.row, reply, dup)
        if isinstance(answer, TaskReply):
            body = answer.row.body() if answer.row else not_found(answer.id)
            return await self.respond(pub, reply, answer.id, body)
        if kind == "update":
            body = {"event": "update_request", **answer}
            return await self.respond(pub, self._update_reply(reply), None, body)
        return await self.respond(pub, reply, None, dict(answer))

    async def _resent(
        self, pub: Publisher, row: TaskRow, reply: Target | None, redelivered: bool
    ) -> bool:
        """A submit naming a task the box knows runs nothing; its one answer is the task's final
        result. Ended: answered now with the stored result. Queued or running: its target is
        added to the task's (in the transaction that reads the state), and the result goes
        there from the outbox when the task ends. A target that already gets the result (the
        same topic and Correlation Data; a redelivery, DUP, of a request) gets no second copy."""
        status = "final"
        if not row.final:
            found, status = await self.store.add_reply(row.id, reply, MAX_WAITING)
            if found is None:
                return await self.respond(pub, reply, row.id, not_found(row.id))
            row = found
        if status == "full":
            raise SpecError(
                ErrorCode.invalid_request,
                f"{MAX_WAITING} requests already wait for task {row.id!r}; ask task/get later",
                row.id,
            )
        if status == "final" and not (redelivered and reply in targets(row.reply)):
            return await self.respond(pub, reply, row.id, row.body())
        return True

    def _update_reply(self, reply: Target | None) -> Target:
        """An update request with no reply target is answered on the update event topic."""
        return reply or {"topic": self.topics.update_events, "correlation": None}

    async def respond(
        self, pub: Publisher, reply: Target | None, task_id: str | None, body: dict[str, Any]
    ) -> bool:
        """Answer one request on its connection: its response topic, else reply_to, else the
        result topic. False when the connection ended first (MqttError is caught here)."""
        target = reply or ({"topic": self.topics.result(task_id)} if task_id else None)
        if target is None:
            return True  # nowhere to answer: the warning line is all there is
        try:
            await pub.wait(send_reply(pub, target, encode(body)))
        except aiomqtt.MqttError:
            return False
        return True
