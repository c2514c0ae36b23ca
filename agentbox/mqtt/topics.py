"""Topic names (README, MQTT), for one device (and its fleet pool)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from paho.mqtt.client import topic_matches_sub

HA_PREFIX = "homeassistant"  # Home Assistant's default discovery prefix
MAX_TOPIC = 1024
TASK_OPS = ("submit", "cancel", "get")
SCHEDULE_OPS = ("set", "delete", "list")


@dataclass(frozen=True)
class Topics:
    prefix: str
    device: str
    pool: str = ""
    discovery: str = HA_PREFIX  # Home Assistant's discovery prefix (mqtt.discovery_prefix)

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def info(self) -> str:
        return f"{self.base}/info"

    @property
    def health(self) -> str:
        return f"{self.base}/health"

    @property
    def update_events(self) -> str:
        """Updates' progress (`update` events) and answers to update requests."""
        return f"{self.base}/update/event"

    def request(self, name: str) -> str:
        """task/submit, task/cancel, task/get, schedule/set, ..."""
        return f"{self.base}/{name}"

    @property
    def pool_submit(self) -> str:
        return f"{self.prefix}/pool/{self.pool}/task/submit"

    @property
    def pool_update(self) -> str:
        """An update for every box of the pool (not shared: each box takes it)."""
        return f"{self.prefix}/pool/{self.pool}/update"

    def pooled(self, topic: str) -> bool:
        """Whether the topic is one of the pool's (signed for the pool's name, not the box's)."""
        return bool(self.pool) and topic in (self.pool_submit, self.pool_update)

    @property
    def pool_subscription(self) -> str:
        return f"$share/{self.pool}/{self.pool_submit}"

    @property
    def ha_status(self) -> str:
        """Where Home Assistant says `online` (its birth) and `offline`."""
        return f"{self.discovery}/status"

    @property
    def ha_config(self) -> str:
        """This box's Home Assistant device discovery topic (retained)."""
        return f"{self.discovery}/device/agentbox_{self.device}/config"

    def event(self, task_id: str) -> str:
        return f"{self.base}/task/{task_id}/event"

    def result(self, task_id: str) -> str:
        return f"{self.base}/task/{task_id}/result"

    def subscriptions(self, ha: bool = False) -> list[str]:
        subs = [self.request(f"task/{name}") for name in TASK_OPS]
        subs += [self.request(f"schedule/{name}") for name in SCHEDULE_OPS]
        subs.append(self.request("update"))
        if self.pool:
            subs += [self.pool_subscription, self.pool_update]
        if ha:
            subs.append(self.ha_status)
        return subs

    def kind(self, topic: str) -> str | None:
        """What an incoming topic asks for: submit, cancel, get, schedule_set, schedule_delete,
        schedule_list, update, ha_status, or None."""
        if topic == self.ha_status:
            return "ha_status"
        if topic == self.pool_submit and self.pool:
            return "submit"
        if topic == self.request("update") or (topic == self.pool_update and self.pool):
            return "update"
        for name in TASK_OPS:
            if topic == self.request(f"task/{name}"):
                return name
        for name in SCHEDULE_OPS:
            if topic == self.request(f"schedule/{name}"):
                return f"schedule_{name}"
        return None


def reply_refusal(
    topic: object, prefix: str, allow: Sequence[str], discovery: str = HA_PREFIX
) -> str | None:
    """Why a request may not have its answer published on `topic`, or None if it may.

    An answer is a message the box publishes with its own broker rights: pointed at another
    box's request topics, at status or at Home Assistant discovery, it would act for whoever
    asked. So the box's prefix (every device), homeassistant/ and $-topics are refused
    whatever `allow` says.
    """
    if not isinstance(topic, str) or not topic:
        return "the response topic must be a non-empty string"
    if len(topic) > MAX_TOPIC or "\0" in topic:
        return "the response topic is too long or holds a NUL"
    shown = repr(topic[:200])
    if "#" in topic or "+" in topic:
        return f"response topic {shown} holds a wildcard"
    if topic.startswith("$"):
        return f"response topic {shown} is a $-topic"
    for refused in dict.fromkeys((prefix, HA_PREFIX, discovery)):
        if topic == refused or topic.startswith(refused + "/"):
            return f"response topic {shown} is under {refused}/, which answers may not reach"
    if not any(topic_matches_sub(f, topic) for f in allow):
        return f"response topic {shown} is not allowed by mqtt.reply_allow"
    return None
