"""Spend caps: reserve the worst case before a call, settle the real cost after it.

Reservation and the cap check happen in one synchronous step on the event loop, so concurrent
calls can never promise more than the caps allow; settled spend is kept in the store's ledger,
so a restart does not forget what today already cost.
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from agentbox.providers.base import Completion
from agentbox.settings import BudgetConfig
from agentbox.vocabulary import UsageEntry


def day_month(at: float) -> tuple[str, str]:
    """The box's local day and month: caps follow the owner's calendar."""
    return _day_month_of_minute(int(at // 60))


@functools.lru_cache(maxsize=8)
def period_start(period: str) -> str:
    """When a local day ("2026-12-01") or month ("2026-12") began, as ISO 8601 with the UTC
    offset: the `last_reset` Home Assistant needs for spend that starts again from zero."""
    parts = [int(p) for p in period.split("-")] + [1]
    start = time.mktime((parts[0], parts[1], parts[2], 0, 0, 0, 0, 0, -1))
    return datetime.fromtimestamp(start).astimezone().isoformat()


@functools.lru_cache(maxsize=8)
def _day_month_of_minute(minute: int) -> tuple[str, str]:
    # Asked several times per task; a local day always starts on a whole minute, so the
    # answer for a minute holds for all of it.
    t = time.localtime(minute * 60)
    return time.strftime("%Y-%m-%d", t), time.strftime("%Y-%m", t)


def usage_entry(
    c: Completion,
    *,
    at: float,
    task_id: str,
    provider: str,
    cost: float,
    estimated: bool,
    call: str = "",
    in_flight: bool = False,
) -> UsageEntry:
    """The ledger row of a completed call."""
    return UsageEntry(
        at,
        task_id,
        provider,
        c.model,
        c.input_tokens,
        c.output_tokens,
        c.cached_tokens,
        c.cache_write_tokens,
        cost,
        estimated,
        call,
        in_flight,
    )


class Ledger(Protocol):
    """Where settled spend is kept (the task store implements it)."""

    async def record(self, entry: UsageEntry) -> None:
        """Write a call's row, or settle the in-flight row of its call id."""
        ...

    async def withdraw(self, call: str) -> None:
        """Drop a call's in-flight row: it never reached the provider, or was refused."""
        ...

    async def totals(self, day: str, month: str) -> tuple[float, float]: ...

    async def spent(self, task_id: str) -> float:
        """What one task's calls have cost so far (all its attempts)."""
        ...


class BudgetExceeded(Exception):
    """A call would cross a cap; the message names the cap and what is left."""


@dataclass(frozen=True)
class Reservation:
    amount: float
    day: str
    month: str
    call: str = field(default_factory=lambda: uuid.uuid4().hex)


class Budget:
    def __init__(self, conf: BudgetConfig, ledger: Ledger) -> None:
        self.conf = conf
        self.ledger = ledger
        self.day, self.month = day_month(time.time())
        self.today = 0.0
        self.this_month = 0.0
        self.reserved = 0.0

    def configure(self, conf: BudgetConfig) -> None:
        """New caps from a reload; what was spent and reserved stays counted."""
        self.conf = conf

    async def load(self) -> None:
        self.day, self.month = day_month(time.time())
        self.today, self.this_month = await self.ledger.totals(self.day, self.month)

    def _roll(self) -> None:
        day, month = day_month(time.time())
        if month != self.month:
            self.month, self.this_month = month, 0.0
        if day != self.day:
            self.day, self.today = day, 0.0

    def reserve(self, amount: float, task_cap: float | None = None) -> Reservation:
        """Promise `amount` USD or raise BudgetExceeded; never awaits, so it is atomic."""
        self._roll()
        cap = self.conf.per_task_usd if task_cap is None else min(task_cap, self.conf.per_task_usd)
        if amount > cap:
            raise BudgetExceeded(f"worst case ${amount:.4f} is over the per-task cap ${cap:.4f}")
        if self.today + self.reserved + amount > self.conf.daily_usd:
            left = max(self.conf.daily_usd - self.today - self.reserved, 0.0)
            raise BudgetExceeded(f"daily cap ${self.conf.daily_usd:.2f} reached (${left:.4f} left)")
        if self.this_month + self.reserved + amount > self.conf.monthly_usd:
            left = max(self.conf.monthly_usd - self.this_month - self.reserved, 0.0)
            raise BudgetExceeded(
                f"monthly cap ${self.conf.monthly_usd:.2f} reached (${left:.4f} left)"
            )
        self.reserved += amount
        return Reservation(amount, self.day, self.month)

    def release(self, res: Reservation) -> None:
        self.reserved = max(self.reserved - res.amount, 0.0)

    def book(
        self,
        res: Reservation,
        completion: Completion,
        cost: float,
        *,
        estimated: bool,
        provider: str,
        task_id: str,
    ) -> UsageEntry:
        """Swap the reservation for the real cost; the caller stores the returned entry."""
        self.release(res)
        at = time.time()
        self._roll()
        day, month = day_month(at)
        if day == self.day:
            self.today += cost
        if month == self.month:
            self.this_month += cost
        return usage_entry(
            completion,
            at=at,
            task_id=task_id,
            provider=provider,
            cost=cost,
            estimated=estimated,
            call=res.call,
        )

    def exhausted(self) -> str:
        """Why nothing more may be spent now, or "" while both caps leave room."""
        self._roll()
        if self.today + self.reserved >= self.conf.daily_usd:
            return f"daily cap ${self.conf.daily_usd:.2f} reached"
        if self.this_month + self.reserved >= self.conf.monthly_usd:
            return f"monthly cap ${self.conf.monthly_usd:.2f} reached"
        return ""

    def snapshot(self) -> dict[str, Any]:
        self._roll()
        return {
            "today_usd": round(self.today, 6),
            "today_since": period_start(self.day),
            "month_usd": round(self.this_month, 6),
            "month_since": period_start(self.month),
            "reserved_usd": round(self.reserved, 6),
            "daily_cap_usd": self.conf.daily_usd,
            "monthly_cap_usd": self.conf.monthly_usd,
        }
