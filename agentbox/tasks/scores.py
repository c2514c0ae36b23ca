"""The scoreboard's copy in the task store: one row per 5-minute bucket and provider/model,
written in the background (no fsync of its own) and read back at start; rows older than a
day are deleted as new ones are written."""

from __future__ import annotations

import json
import sqlite3
import time

from agentbox.routing.scoreboard import BINS, DAY_S, Bucket, Scoreboard, bucket_of
from agentbox.tasks.store import Store
from agentbox.tasks.writer import StoreError

_COLUMNS = (
    "bucket, provider, model, calls, answered, failures, first_ms, end_ms, first_max_ms,"
    " end_max_ms, input_tokens, output_tokens, cost_usd, tasks"
)
Row = tuple[int, str, str, Bucket]
PATIENCE_S = 5.0  # figures are not worth holding a stop for while the disk fails


def _bins(text: str) -> list[int]:
    """A stored histogram, or empty bins when it is not one (never trust a file blindly)."""
    try:
        bins = json.loads(text)
    except ValueError:
        return [0] * BINS
    if not isinstance(bins, list) or len(bins) != BINS:
        return [0] * BINS
    return [n if isinstance(n, int) and n >= 0 else 0 for n in bins]


def _failures(text: str) -> dict[str, int]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, int) and v > 0}


def read_rows(c: sqlite3.Connection, since: int) -> list[Row]:
    rows = c.execute(
        f"SELECT {_COLUMNS} FROM scoreboard WHERE bucket >= ?",  # noqa: S608
        (since,),
    ).fetchall()
    return [
        (
            int(r["bucket"]),
            r["provider"],
            r["model"],
            Bucket(
                calls=r["calls"],
                answered=r["answered"],
                failures=_failures(r["failures"]),
                first_ms=_bins(r["first_ms"]),
                end_ms=_bins(r["end_ms"]),
                first_max_ms=r["first_max_ms"],
                end_max_ms=r["end_max_ms"],
                input_tokens=r["input_tokens"],
                output_tokens=r["output_tokens"],
                cost_usd=r["cost_usd"],
                tasks=r["tasks"],
            ),
        )
        for r in rows
    ]


def write_rows(c: sqlite3.Connection, rows: list[Row], older_than: int) -> None:
    """Each bucket's whole state replaces its row (memory holds the sum); old rows go."""
    c.executemany(
        f"INSERT OR REPLACE INTO scoreboard ({_COLUMNS})"  # noqa: S608
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                at,
                provider,
                model,
                b.calls,
                b.answered,
                json.dumps(b.failures, separators=(",", ":")),
                json.dumps(b.first_ms, separators=(",", ":")),
                json.dumps(b.end_ms, separators=(",", ":")),
                b.first_max_ms,
                b.end_max_ms,
                b.input_tokens,
                b.output_tokens,
                b.cost_usd,
                b.tasks,
            )
            for at, provider, model, b in rows
        ],
    )
    c.execute("DELETE FROM scoreboard WHERE bucket < ?", (older_than,))


class StoreScores:
    """Keeps a Scoreboard's buckets in the task store across restarts."""

    def __init__(self, store: Store, board: Scoreboard) -> None:
        self.store = store
        self.board = board

    async def load(self, now: float | None = None) -> int:
        """Read the last day's buckets back; returns how many."""
        since = bucket_of((now or time.time()) - DAY_S)
        rows = await self.store.read(lambda c: read_rows(c, since))
        self.board.restore(rows)
        return len(rows)

    async def flush(self, now: float | None = None) -> int:
        """Write the buckets changed since the last flush in one op of the next group commit
        (not durable: a crash loses at most the last few seconds of figures, never spend)."""
        at = now or time.time()
        self.board.prune(at)
        rows = self.board.take_dirty()
        older = bucket_of(at - DAY_S)
        if not rows:
            return 0
        try:
            await self.store.write(lambda c: write_rows(c, rows, older), patience=PATIENCE_S)
        except StoreError:
            self.board.mark_dirty([(a, p, m) for a, p, m, _ in rows])
            raise
        return len(rows)
