"""The usage ledger in the task store: one row per billed call, per task, provider and day."""

from __future__ import annotations

import sqlite3

from agentbox.routing.budget import UsageEntry, day_month
from agentbox.tasks.store import Store


class StoreLedger:
    """Implements routing.budget.Ledger on the task store's writer thread."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def record(self, entry: UsageEntry) -> None:
        day, month = day_month(entry.at)

        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO usage (at, day, month, task_id, provider, model, input_tokens,"
                " output_tokens, cached_tokens, cache_write_tokens, cost_usd, estimated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.at,
                    day,
                    month,
                    entry.task_id,
                    entry.provider,
                    entry.model,
                    entry.input_tokens,
                    entry.output_tokens,
                    entry.cached_tokens,
                    entry.cache_write_tokens,
                    entry.cost_usd,
                    int(entry.estimated),
                ),
            )

        await self.store.write(op, durable=True)  # money spent must survive a power cut

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

    async def by_provider(self, day: str) -> dict[str, float]:
        def op(c: sqlite3.Connection) -> dict[str, float]:
            return {
                p: float(v)
                for p, v in c.execute(
                    "SELECT provider, sum(cost_usd) FROM usage WHERE day = ? GROUP BY provider",
                    (day,),
                )
            }

        return await self.store.read(op)
