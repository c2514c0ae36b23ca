"""Versioned schema of the task store; PRAGMA user_version records how far a file has come."""

from __future__ import annotations

import sqlite3

# Append only: a shipped step is never edited, a change is a new step.
STEPS: tuple[str, ...] = (
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
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # v4: each claim looks for overdue deadlines and the next due time among queued tasks;
    # without these it scanned every queued row (a burst of 2,000 made that quadratic).
    """
    CREATE INDEX tasks_queued_deadline ON tasks (lane, deadline_at) WHERE state = 'queued';
    CREATE INDEX tasks_queued_next ON tasks (lane, next_run_at) WHERE state = 'queued';
    """,
    # v5: recurring jobs, each with the due time of its next run
    """
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        next_at REAL NOT NULL,
        created_at REAL NOT NULL
    );
    """,
    # v6: an agent task's later attempts look up what its earlier ones spent
    """
    CREATE INDEX usage_task ON usage (task_id);
    """,
    # v7: what agent tasks keep for later runs (the remember and recall tools)
    """
    CREATE TABLE notes (
        key TEXT PRIMARY KEY,
        text TEXT NOT NULL,
        task_id TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # v8: a cloud call is written before it leaves the box (in flight, at its worst case) and
    # settled by its call id, so a crash or a full disk cannot lose what it may have cost
    """
    ALTER TABLE usage ADD COLUMN call TEXT;
    ALTER TABLE usage ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0;
    CREATE UNIQUE INDEX usage_call ON usage (call);
    """,
    # v9: the provider scoreboard, one row per 5-minute bucket and provider/model, a day kept;
    # latencies as fixed histogram bins (JSON lists), failures per class (a JSON object)
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
)


class SchemaTooNew(Exception):
    """The file was written by a newer agentbox."""


def migrate(conn: sqlite3.Connection) -> tuple[int, int]:
    """Bring the schema up to date in one transaction; returns (from_version, to_version)."""
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    target = len(STEPS)
    if current > target:
        raise SchemaTooNew(f"store schema version {current} is newer than this agentbox ({target})")
    if current == target:
        return current, target
    conn.execute("BEGIN IMMEDIATE")
    try:
        for step in STEPS[current:]:
            for statement in step.split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {target}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return current, target
