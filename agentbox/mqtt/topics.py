"""Topic names of DESIGN.md section 6, for one device (and its fleet pool)."""

from __future__ import annotations

from dataclasses import dataclass

HA_STATUS = "homeassistant/status"
TASK_OPS = ("submit", "cancel", "get")
SCHEDULE_OPS = ("set", "delete", "list")


@dataclass(frozen=True)
class Topics:
    prefix: str
    device: str
    pool: str = ""

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

    def request(self, name: str) -> str:
        """task/submit, task/cancel, task/get, schedule/set, ..."""
        return f"{self.base}/{name}"

    @property
    def pool_submit(self) -> str:
        return f"{self.prefix}/pool/{self.pool}/task/submit"

    @property
    def pool_subscription(self) -> str:
        return f"$share/{self.pool}/{self.pool_submit}"

    def event(self, task_id: str) -> str:
        return f"{self.base}/task/{task_id}/event"

    def result(self, task_id: str) -> str:
        return f"{self.base}/task/{task_id}/result"

    def subscriptions(self, ha: bool = False) -> list[str]:
        subs = [self.request(f"task/{name}") for name in TASK_OPS]
        subs += [self.request(f"schedule/{name}") for name in SCHEDULE_OPS]
        if self.pool:
            subs.append(self.pool_subscription)
        if ha:
            subs.append(HA_STATUS)
        return subs

    def kind(self, topic: str) -> str | None:
        """What an incoming topic asks for: submit, cancel, get, schedule_set, schedule_delete,
        schedule_list, ha_status, or None."""
        if topic == HA_STATUS:
            return "ha_status"
        if topic == self.pool_submit and self.pool:
            return "submit"
        for name in TASK_OPS:
            if topic == self.request(f"task/{name}"):
                return name
        for name in SCHEDULE_OPS:
            if topic == self.request(f"schedule/{name}"):
                return f"schedule_{name}"
        return None
