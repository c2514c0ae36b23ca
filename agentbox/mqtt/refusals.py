"""Requests that arrive past what intake holds (intake.py), when a broker exceeds the box's
Receive Maximum: none is queued with its payload. Each is read at once, as the bridge would read
it (signature, size, JSON, answer topic), and answered with the bridge's rejection where one of
those fails, else with a final `busy` rejection ("not run, send it again"). Its PUBACK of 0x97
goes out only once that answer is delivered: if the connection ends first, the broker delivers
the request again. Only the answer waits, never the payload.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentbox.mqtt import intake
from agentbox.mqtt.payloads import decode, id_of, rejected
from agentbox.tasks.writer import StoreError
from agentbox.vocabulary import ErrorCode, SpecError

if TYPE_CHECKING:  # the bridge imports this module
    from agentbox.mqtt.bridge import Bridge, Link
    from agentbox.mqtt.requests import Requests

# Answers pending at once; past that a refused request is left unacknowledged, for the broker
# to deliver again on the next connection.
ANSWERING_MAX = 1024
BUSY_MESSAGE = (
    "the box is busy: the broker sent more requests at once than its Receive Maximum allows;"
    " not run, send it again"
)


@dataclass
class Refused:
    """What a refused request's answer needs, its payload left behind."""

    kind: str | None
    dup: bool  # a redelivery
    task_id: str | None
    reply: dict[str, Any] | None  # None: the result topic of task_id, if any
    verdict: tuple[str, str]  # error code and message


class Refusals:
    """The bridge's refusals of deliveries past intake's window (see the module docstring)."""

    def __init__(self, requests: Requests, bridge: Bridge) -> None:
        self.requests = requests  # how a request is read and answered
        self.bridge = bridge  # only for its connection and whether intake is open
        self._answering: set[asyncio.Task[None]] = set()

    def refuse(self, message: intake.Request, slot: intake.Slot) -> None:
        """Called by intake while the payload is at hand; the answer goes out from a task."""
        b, r = self.bridge, self.requests
        link = b.link
        topic, raw = str(message.topic), message.payload
        assert isinstance(raw, bytes)  # intake.Request's payload always is
        if link is None or not b.intake_open or len(self._answering) >= ANSWERING_MAX:
            if link is not None:  # left unacknowledged: delivered again on the next connection
                link.window.settle(slot, None)
                if b.intake_open:
                    r.warnings.warning(
                        "left_unacknowledged",
                        "left a message on %s unacknowledged: %d refusals await their answers",
                        topic,
                        len(self._answering),
                    )
            return
        refused = Refused(r.topics.kind(topic), message.dup, None, None, ("busy", BUSY_MESSAGE))
        try:
            refused.reply, refusal = r.reply_target(message)
            signature = None
            if r.conf.require_signature:
                signature = r.signature(message, topic, raw)
                if r.replays.seen(signature):  # a replay, or a redelivery of one served
                    r.warnings.warning("replayed", "dropped a replayed request on %s", topic)
                    link.window.settle(slot, intake.QUOTA_EXCEEDED)
                    return
            data = decode(raw, r.conf.max_payload_bytes)
            refused.task_id = id_of(data)
            if refused.kind == "submit" and signature is not None and data.get("id") is None:
                refused.task_id = f"sig-{signature[:40]}"  # its task's id (requests.py)
            if refused.reply is None and refusal is None and "reply_to" in data:
                refused.reply, refusal = r.target(data["reply_to"], None)
            if refusal is not None:
                raise SpecError(ErrorCode.invalid_request, refusal)
        except SpecError as exc:
            refused.verdict = (str(exc.code), exc.message)
        r.rejected += 1
        r.warnings.warning(
            refused.verdict[0],
            "refused %d-byte message on %s: %s: %s",
            len(raw),
            topic,
            *refused.verdict,
        )
        task = asyncio.create_task(self._answer(link, slot, refused))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, link: Link, slot: intake.Slot, refused: Refused) -> None:
        code: int | None = intake.QUOTA_EXCEEDED
        try:
            if refused.kind in (None, "ha_status"):
                return  # not a request: nothing to answer
            redelivered = refused.dup and refused.kind == "submit" and refused.verdict[0] == "busy"
            if redelivered and await self._known(refused.task_id):
                return  # its task answers, or has answered: exactly one answer (requests.py)
            body = rejected(refused.task_id, *refused.verdict)
            if not await self.requests.respond(link.pub, refused.reply, refused.task_id, body):
                code = None  # the link ended first: delivered again on the next one
        finally:
            link.window.settle(slot, code)

    async def _known(self, task_id: str | None) -> bool:
        """A task with this id exists: this is a redelivery, already answered or to be."""
        if task_id is None:
            return False
        with contextlib.suppress(StoreError):
            return await self.requests.service.get(task_id) is not None
        return False
