"""The usage ledger in the task store: one row per cloud call, per task, provider and day."""

from __future__ import annotations

import sqlite3

from agentbox.tasks.store import Store
from agentbox.tasks.usage import insert_usage, withdraw_call
from agentbox.vocabulary import UsageEntry


class StoreLedger:
    """Implements routing.budget.Ledger on the task store's writer thread."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def record(self, entry: UsageEntry) -> None:
        def op(c: sqlite3.Connection) -> None:
            insert_usage(c, entry)

        # Calls that end a task are booked with its result (Store.finish); this path is for
        # the rest (calls in flight, cut streams, refused answers) and is as durable as a result.
        await self.store.write(op, durable=True)

    async def withdraw(self, call: str) -> None:
        await self.store.write(lambda c: withdraw_call(c, call), durable=True)

    async def totals(self, day: str, month: str) -> tuple[float, float]:
        def op(c: sqlite3.Connection) -> tuple[float, float]:
            (today,) = c.execute(
                "SELECT coalesce(sum(cost_usd), 0) FROM usage WHERE day = ?", (day,)
            ).fetchone()
            (this_month,) = c.execute(
                "SELECT coalesce(sum(cost_usd), 0) FROM usage WHERE month = ?", (month,)
            ).fetchone()
            return float(today), float(this_month)

        return await self.store.read(op)

    async def spent(self, task_id: str) -> float:
        def op(c: sqlite3.Connection) -> float:
            (total,) = c.execute(
                "SELECT coalesce(sum(cost_usd), 0) FROM usage WHERE task_id = ?", (task_id,)
            ).fetchone()
            return float(total)

        return await self.store.read(op)
