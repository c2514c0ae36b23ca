"""Rows of the usage ledger: a call is written in flight (at its worst case) before it leaves
the box, and settled in place, by its call id, with what it really cost."""

from __future__ import annotations

import sqlite3

from agentbox.routing.budget import day_month
from agentbox.vocabulary import UsageEntry


def insert_usage(c: sqlite3.Connection, entry: UsageEntry) -> None:
    """Write one call's row (per task, provider and day), or settle the row of its call id."""
    day, month = day_month(entry.at)
    c.execute(
        "INSERT INTO usage (at, day, month, task_id, provider, model, input_tokens,"
        " output_tokens, cached_tokens, cache_write_tokens, cost_usd, estimated, call, in_flight)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (call) DO UPDATE SET at = excluded.at, day = excluded.day,"
        " month = excluded.month, model = excluded.model, input_tokens = excluded.input_tokens,"
        " output_tokens = excluded.output_tokens, cached_tokens = excluded.cached_tokens,"
        " cache_write_tokens = excluded.cache_write_tokens, cost_usd = excluded.cost_usd,"
        " estimated = excluded.estimated, in_flight = excluded.in_flight",
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
            entry.call or None,
            int(entry.in_flight),
        ),
    )


def withdraw_call(c: sqlite3.Connection, call: str) -> None:
    """Drop the in-flight row of a call that never reached the provider or was refused."""
    c.execute("DELETE FROM usage WHERE call = ? AND in_flight = 1", (call,))


def settle_orphans(c: sqlite3.Connection) -> int:
    """At start: calls a dead process left in flight stay booked at their worst case (their
    rows already hold it, marked estimated); returns how many."""
    return c.execute("UPDATE usage SET in_flight = 0 WHERE in_flight = 1").rowcount
