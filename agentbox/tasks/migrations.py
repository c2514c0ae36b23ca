"""Versioned schema of the task store; PRAGMA user_version records how far a file has come."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One migration. `additive`: a release that stops before this step can still use a store
    migrated past it (new tables, indexes, columns with defaults), so a rollback across it
    loses nothing; a step that drops, renames or changes what older code reads is not."""

    sql: str
    additive: bool = True


# Append only: a shipped step is never edited, a change is a new step.
STEPS: tuple[Step, ...] = (
    Step(
        """
    CREATE TABLE tasks (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        lane TEXT NOT NULL,
        priority INTEGER NOT NULL,
        spec TEXT NOT NULL,
        route TEXT,
        result TEXT,
        reply TEXT,
        source TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        deadline_at REAL NOT NULL,
        next_run_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    );
    CREATE INDEX tasks_ready ON tasks (lane, priority DESC, seq) WHERE state = 'queued';
    CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX tasks_state ON tasks (state);
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        event TEXT NOT NULL,
        payload TEXT NOT NULL,
        reply TEXT,
        created_at REAL NOT NULL
    );
    """,
    ),
    Step(
        """
    CREATE TABLE usage (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        day TEXT NOT NULL,
        month TEXT NOT NULL,
        task_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        estimated INTEGER NOT NULL
    );
    CREATE INDEX usage_day ON usage (day);
    CREATE INDEX usage_month ON usage (month);
    """,
    ),
    Step(
        """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    ),
    # v4: each claim looks for overdue deadlines and the next due time among queued tasks;
    # without these it scanned every queued row (a burst of 2,000 made that quadratic).
    Step(
        """
    CREATE INDEX tasks_queued_deadline ON tasks (lane, deadline_at) WHERE state = 'queued';
    CREATE INDEX tasks_queued_next ON tasks (lane, next_run_at) WHERE state = 'queued';
    """,
    ),
    # v5: recurring jobs, each with the due time of its next run
    Step(
        """
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        next_at REAL NOT NULL,
        created_at REAL NOT NULL
    );
    """,
    ),
    # v6: an agent task's later attempts look up what its earlier ones spent
    Step(
        """
    CREATE INDEX usage_task ON usage (task_id);
    """,
    ),
    # v7: what agent tasks keep for later runs (the remember and recall tools)
    Step(
        """
    CREATE TABLE notes (
        key TEXT PRIMARY KEY,
        text TEXT NOT NULL,
        task_id TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    ),
    # v8: a cloud call is written before it leaves the box (in flight, at its worst case) and
    # settled by its call id, so a crash or a full disk cannot lose what it may have cost
    Step(
        """
    ALTER TABLE usage ADD COLUMN call TEXT;
    ALTER TABLE usage ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0;
    CREATE UNIQUE INDEX usage_call ON usage (call);
    """,
    ),
    # v9: the provider scoreboard, one row per 5-minute bucket and provider/model, a day kept;
    # latencies as fixed histogram bins (JSON lists), failures per class (a JSON object)
    Step(
        """
    CREATE TABLE scoreboard (
        bucket INTEGER NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        calls INTEGER NOT NULL,
        answered INTEGER NOT NULL,
        failures TEXT NOT NULL,
        first_ms TEXT NOT NULL,
        end_ms TEXT NOT NULL,
        first_max_ms REAL NOT NULL,
        end_max_ms REAL NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        tasks INTEGER NOT NULL,
        PRIMARY KEY (bucket, provider, model)
    );
    """,
    ),
)


class SchemaTooNew(Exception):
    """The file was written by a newer agentbox."""


DB_NAME = "agentbox.db"  # the store's file in the state directory
FLOOR_KEY = "schema_floor"  # in meta: the oldest schema version that can still use the store


def floor(upto: int = len(STEPS)) -> int:
    """The oldest schema version a release may have and still use a store migrated to `upto`:
    the newest step up to there that is not additive (0 when all are)."""
    return max((v for v, step in enumerate(STEPS[:upto], 1) if not step.additive), default=0)


def _floor_of(conn: sqlite3.Connection) -> int | None:
    """What a newer release wrote as its store's floor (None: it did not say)."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (FLOOR_KEY,)).fetchone()
    except sqlite3.OperationalError:
        return None
    return int(row[0]) if row and str(row[0]).isdigit() else None


def migrate(conn: sqlite3.Connection) -> tuple[int, int]:
    """Bring the schema up to date in one transaction; returns (from_version, to_version).
    A store a newer release migrated only by additive steps past ours is used as it is."""
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    target = len(STEPS)
    if current > target:
        readable = _floor_of(conn)
        if readable is None or readable > target:
            raise SchemaTooNew(
                f"store schema version {current} is newer than this agentbox ({target})"
            )
        return current, current
    if current == target:
        return current, target
    conn.execute("BEGIN IMMEDIATE")
    try:
        for step in STEPS[current:]:
            for statement in step.sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (FLOOR_KEY, str(floor(target))),
        )
        conn.execute(f"PRAGMA user_version = {target}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return current, target
