"""Durable task store: tasks, their outbox events and counters, on the group-commit writer."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from agentbox import jsonstrict
from agentbox.tasks.hub import Change, Hub
from agentbox.tasks.rows import COLUMNS, Event, OpenReport, TaskRow, dumps, targets
from agentbox.tasks.usage import insert_usage, settle_orphans
from agentbox.tasks.writer import Writer
from agentbox.vocabulary import FINAL_STATES, ErrorCode, Route, State, TaskSpec, UsageEntry

log = logging.getLogger("agentbox.store")
PRUNE_BATCH = 500  # finished tasks deleted per transaction


class Store(Writer):
    """All task state on top of the writer: tasks, outbox, counters."""

    def __init__(self, path: Path, outbox: bool = True, hub: Hub | None = None) -> None:
        super().__init__(path)
        self.outbox_enabled = outbox
        self.hub = hub if hub is not None else Hub()  # told every committed event

    def _after_commit(self, staged: list[Any]) -> None:
        if staged:
            self.hub.committed(staged)

    async def open(self, now: float | None = None) -> OpenReport:
        """Open, check and migrate the file, then requeue work a dead process left running and
        book the cloud calls it left unsettled at their reserved worst case."""
        versions = await self._call(self._open_sync)
        ended = await self.write(lambda c: self._recover(c, now or time.time()), durable=True)
        calls = await self.write(settle_orphans, durable=True)
        if calls:
            log.warning("%d cloud call(s) of a dead process booked at their worst case", calls)
        return OpenReport(versions[0], versions[1], ended[0], ended[1], calls)

    # ---- tasks -------------------------------------------------------------------------

    def _event(self, c: sqlite3.Connection, row: TaskRow, event: str) -> None:
        """Stage an event for the hub; with the outbox on, it is also an outbox row."""
        outbox = None
        if self.outbox_enabled:
            payload = {"event": event, **row.body()}  # "event" first: see Event.body
            message = jsonstrict.dumps(payload, separators=(",", ":"))
            seq = c.execute(
                "INSERT INTO outbox (task_id, event, payload, reply, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (row.id, event, message, dumps(row.reply), time.time()),
            ).lastrowid
            reply = row.reply if event == "result" else None
            outbox = Event(seq or 0, row.id, event, message.encode(), reply)
        self.staged.append(Change(event, row, outbox))

    @staticmethod
    def _one(c: sqlite3.Connection, where: str, args: Iterable[Any]) -> TaskRow | None:
        r = c.execute(f"SELECT {COLUMNS} FROM tasks WHERE {where}", tuple(args)).fetchone()  # noqa: S608
        return TaskRow.from_row(r) if r else None

    async def submit(
        self,
        spec: TaskSpec,
        *,
        lane: str,
        max_attempts: int,
        source: str,
        reply: dict[str, Any] | None = None,
        route: dict[str, Any] | None = None,
        state: State = State.queued,
        result: dict[str, Any] | None = None,
        now: float | None = None,
        patience: float | None = None,
    ) -> tuple[TaskRow, bool]:
        """Insert a task unless its id is known; returns (the task, whether it is new).
        `state=running` starts its first attempt in the same transaction (an idle lane's
        scheduler reserved the slot), which saves the claim's. `patience`: see Writer.write."""
        assert spec.id is not None
        at = now or time.time()
        started = state == State.running

        def op(c: sqlite3.Connection) -> tuple[TaskRow, bool]:
            cur = c.execute(
                "INSERT INTO tasks (id, state, lane, priority, spec, route, result, reply, source,"
                " attempts, max_attempts, created_at, deadline_at, next_run_at, started_at,"
                " finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                (
                    spec.id,
                    state,
                    lane,
                    spec.priority,
                    spec.to_json(),
                    dumps(route),
                    dumps(result),
                    dumps(reply),
                    source,
                    int(started),
                    max_attempts,
                    at,
                    at + spec.deadline_s,
                    at,
                    at if started else None,
                    at if state in FINAL_STATES else None,
                ),
            )
            if cur.rowcount != 1:
                known = self._one(c, "id = ?", (spec.id,))
                assert known is not None
                return known, False
            row = TaskRow(
                seq=int(cur.lastrowid or 0),
                id=spec.id or "",
                state=state,
                lane=lane,
                priority=spec.priority,
                spec=spec,
                route=route,
                result=result or {},
                reply=reply,
                source=source,
                attempts=int(started),
                max_attempts=max_attempts,
                cancel_requested=False,
                created_at=at,
                deadline_at=at + spec.deadline_s,
                next_run_at=at,
                started_at=at if started else None,
                finished_at=at if state in FINAL_STATES else None,
            )
            if state in FINAL_STATES:
                self._event(c, row, "result")
            elif started:
                # Started in this transaction: `accepted` still shows it as taken in (queued,
                # no attempt yet), and `running` follows, as for a task that waited.
                queued = replace(row, state=State.queued, attempts=0, started_at=None)
                self._event(c, queued, "accepted")
                self._event(c, row, "running")
            else:
                self._event(c, row, "accepted")
            return row, True

        return await self.write(op, durable=True, patience=patience)

    async def add_reply(
        self, task_id: str, reply: dict[str, Any] | None, limit: int
    ) -> tuple[TaskRow | None, str]:
        """One more request waits for a known task's final result, answered at `reply`. In one
        transaction with the task's state: returns (the task, "final") when it has ended (answer
        now), "added", "waiting" (that target already gets the result), or "full" (`limit`
        targets wait already); (None, "gone") when the task is no longer kept."""

        def op(c: sqlite3.Connection) -> tuple[TaskRow | None, str]:
            row = self._one(c, "id = ?", (task_id,))
            if row is None:
                return None, "gone"
            if row.final:
                return row, "final"
            waiting = targets(row.reply)
            if reply in waiting:
                return row, "waiting"
            if len(waiting) >= limit:
                return row, "full"
            waiting.append(reply)
            c.execute("UPDATE tasks SET reply = ? WHERE seq = ?", (dumps(waiting), row.seq))
            return replace(row, reply=waiting), "added"

        return await self.write(op, durable=True)

    async def claim(self, lane: str, limit: int, now: float) -> tuple[list[TaskRow], float | None]:
        """In one transaction: expire the lane's overdue queued tasks (their results go out as
        events), mark up to `limit` due ones running. Returns (claimed, when the lane next
        needs a look): the next run time or deadline, or only the next deadline when full."""

        def op(c: sqlite3.Connection) -> tuple[list[TaskRow], float | None]:
            expired = [
                TaskRow.from_row(r)
                for r in c.execute(
                    f"UPDATE tasks SET state = 'expired', finished_at = ?, result = ?"  # noqa: S608
                    f" WHERE state = 'queued' AND lane = ? AND deadline_at <= ?"
                    f" RETURNING {COLUMNS}",
                    (
                        now,
                        dumps(_error(ErrorCode.deadline, "deadline passed before it ran")),
                        lane,
                        now,
                    ),
                )
            ]
            for row in expired:
                self._event(c, row, "result")
            rows = c.execute(
                f"UPDATE tasks SET state = 'running', attempts = attempts + 1, started_at = ?"  # noqa: S608
                f" WHERE seq IN (SELECT seq FROM tasks INDEXED BY tasks_ready"
                f" WHERE state = 'queued' AND lane = ?"
                f" AND next_run_at <= ? ORDER BY priority DESC, seq LIMIT ?)"
                f" RETURNING {COLUMNS}",
                (now, lane, now, limit),
            ).fetchall()
            claimed = sorted(
                (TaskRow.from_row(r) for r in rows), key=lambda t: (-t.priority, t.seq)
            )
            for row in claimed:
                self._event(c, row, "running")
            # Two queries: SQLite answers a lone min() from an index without a scan.
            (next_run,) = c.execute(
                "SELECT min(next_run_at) FROM tasks WHERE state = 'queued' AND lane = ?", (lane,)
            ).fetchone()
            (next_deadline,) = c.execute(
                "SELECT min(deadline_at) FROM tasks WHERE state = 'queued' AND lane = ?", (lane,)
            ).fetchone()
            if next_run is None or len(claimed) >= limit:
                return claimed, next_deadline
            return claimed, min(next_run, next_deadline)

        return await self.write(op)

    async def finish(
        self,
        row: TaskRow,
        state: State,
        result: dict[str, Any],
        route: Route | None,
        bills: tuple[UsageEntry, ...] = (),
    ) -> TaskRow | None:
        """Record the final state of one run and what it cost, in one transaction; None when
        that run no longer owns the task (its spend is booked all the same)."""

        taken = None if route is None else dumps(route.model_dump())  # the route it took

        def op(c: sqlite3.Connection) -> TaskRow | None:
            for bill in bills:
                insert_usage(c, bill)
            cur = c.execute(
                "UPDATE tasks SET state = ?, result = ?, route = coalesce(?, route),"
                " finished_at = ? WHERE seq = ? AND state = 'running' AND attempts = ?",
                (state, dumps(result), taken, time.time(), row.seq, row.attempts),
            )
            if cur.rowcount != 1:
                return None
            done = self._one(c, "seq = ?", (row.seq,))
            assert done is not None
            self._event(c, done, "result")
            return done

        return await self.write(op, durable=True)

    async def retry(
        self, row: TaskRow, at: float, error: dict[str, Any], refund: bool = False
    ) -> bool:
        """Put a failed run back in the queue to run again at `at` (`refund`: its attempt too)."""

        def op(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE tasks SET state = 'queued', next_run_at = ?, result = ?,"
                " attempts = attempts - ? WHERE seq = ? AND state = 'running' AND attempts = ?",
                (at, dumps({"error": error}), int(refund), row.seq, row.attempts),
            )
            return cur.rowcount == 1

        return await self.write(op)

    async def release(self, rows: list[TaskRow], patience: float | None = None) -> int:
        """Requeue runs interrupted by a stop, giving their attempt back."""

        def op(c: sqlite3.Connection) -> int:
            n = 0
            for row in rows:
                n += c.execute(
                    "UPDATE tasks SET state = 'queued', attempts = attempts - 1, next_run_at = ?"
                    " WHERE seq = ? AND state = 'running' AND attempts = ?",
                    (time.time(), row.seq, row.attempts),
                ).rowcount
            return n

        return await self.write(op, durable=True, patience=patience)

    async def cancel(self, task_id: str) -> TaskRow | None:
        """Cancel a queued task now; flag a running one for its runner. None if unknown."""

        def op(c: sqlite3.Connection) -> TaskRow | None:
            c.execute(
                "UPDATE tasks SET cancel_requested = 1 WHERE id = ? AND state = 'running'",
                (task_id,),
            )
            cur = c.execute(
                "UPDATE tasks SET state = 'cancelled', finished_at = ?, result = ?"
                " WHERE id = ? AND state = 'queued'",
                (time.time(), dumps(_error(ErrorCode.cancelled, "cancelled")), task_id),
            )
            row = self._one(c, "id = ?", (task_id,))
            if row is not None and cur.rowcount == 1:
                self._event(c, row, "result")
            return row

        return await self.write(op, durable=True)

    def _recover(self, c: sqlite3.Connection, now: float) -> tuple[int, int]:
        """After a crash: runs left 'running' go back to the queue, or end if they may not."""
        rows = [
            TaskRow.from_row(r)
            for r in c.execute(f"SELECT {COLUMNS} FROM tasks WHERE state = 'running'")  # noqa: S608
        ]
        requeued = ended = 0
        for row in rows:
            if row.cancel_requested:
                state, result = State.cancelled, _error(ErrorCode.cancelled, "cancelled")
            elif row.deadline_at <= now:
                state, result = State.expired, _error(ErrorCode.deadline, "deadline passed")
            elif row.attempts >= row.max_attempts:
                msg = f"interrupted by a restart after {row.attempts} attempts"
                state, result = State.failed, _error(ErrorCode.internal, msg)
            else:
                c.execute(
                    "UPDATE tasks SET state = 'queued', next_run_at = ? WHERE seq = ?",
                    (now, row.seq),
                )
                requeued += 1
                continue
            c.execute(
                "UPDATE tasks SET state = ?, result = ?, finished_at = ? WHERE seq = ?",
                (state, dumps(result), now, row.seq),
            )
            done = self._one(c, "seq = ?", (row.seq,))
            assert done is not None
            self._event(c, done, "result")
            ended += 1
        return requeued, ended

    async def get(self, task_id: str) -> TaskRow | None:
        return await self.read(lambda c: self._one(c, "id = ?", (task_id,)))

    async def list_tasks(self, state: str | None = None, limit: int = 50) -> list[TaskRow]:
        def op(c: sqlite3.Connection) -> list[TaskRow]:
            where, args = ("WHERE state = ?", (state, limit)) if state else ("", (limit,))
            sql = f"SELECT {COLUMNS} FROM tasks {where} ORDER BY seq DESC LIMIT ?"  # noqa: S608
            return [TaskRow.from_row(r) for r in c.execute(sql, args)]

        return await self.read(op)

    async def counts(self) -> dict[str, dict[str, int]]:
        """Live tasks per lane and state, e.g. {"local": {"queued": 2, "running": 1}}."""

        def op(c: sqlite3.Connection) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for lane, state, n in c.execute(
                "SELECT lane, state, count(*) FROM tasks WHERE state IN ('queued', 'running')"
                " GROUP BY lane, state"
            ):
                out.setdefault(lane, {})[state] = n
            return out

        return await self.read(op)

    async def outcomes_since(self, since: float) -> dict[str, int]:
        """Finished tasks per final state since `since` (for health: succeeded_1h, failed_1h)."""

        def op(c: sqlite3.Connection) -> dict[str, int]:
            return {
                state: n
                for state, n in c.execute(
                    "SELECT state, count(*) FROM tasks WHERE finished_at >= ? GROUP BY state",
                    (since,),
                )
            }

        return await self.read(op)

    async def prune(
        self, now: float, retention_s: float, keep_max: int, batch: int = PRUNE_BATCH
    ) -> int:
        """Delete finished tasks past retention, and the oldest beyond `keep_max`, a batch per
        transaction: a big delete would hold the writer and grow the page cache and heap."""

        def cutoff(c: sqlite3.Connection) -> float:
            (kept,) = c.execute(
                "SELECT finished_at FROM tasks WHERE finished_at IS NOT NULL"
                " ORDER BY finished_at DESC LIMIT 1 OFFSET ?",
                (keep_max,),
            ).fetchone() or (None,)
            expiry = now - retention_s
            return expiry if kept is None else max(expiry, kept + 1e-6)

        before = await self.read(cutoff)

        def op(c: sqlite3.Connection) -> int:
            return c.execute(
                "DELETE FROM tasks WHERE seq IN (SELECT seq FROM tasks WHERE finished_at IS NOT"
                " NULL AND finished_at < ? ORDER BY finished_at LIMIT ?)",
                (before, batch),
            ).rowcount

        total = 0
        while (n := await self.write(op)) > 0:
            total += n
            if n < batch:
                break
        # Undelivered events older than retention go too: a broker gone for a week must not
        # fill the disk. Everything newer waits for the broker.
        await self.write(
            lambda c: c.execute("DELETE FROM outbox WHERE created_at < ?", (now - retention_s,))
        )
        return total

    # ---- outbox ------------------------------------------------------------------------

    async def outbox_fetch(self, limit: int = 100) -> list[Event]:
        def op(c: sqlite3.Connection) -> list[Event]:
            return [
                Event(
                    r["seq"],
                    r["task_id"],
                    r["event"],
                    r["payload"].encode(),
                    json.loads(r["reply"]) if r["reply"] and r["event"] == "result" else None,
                )
                for r in c.execute(
                    "SELECT seq, task_id, event, payload, reply FROM outbox ORDER BY seq LIMIT ?",
                    (limit,),
                )
            ]

        return await self.read(op)

    async def outbox_delete(self, seqs: list[int]) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

        await self.write(op)

    async def bump(self, key: str) -> int:
        """Increment a counter kept in the store (e.g. the MQTT session number)."""

        def op(c: sqlite3.Connection) -> int:
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?, '1')"
                " ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                (key,),
            )
            (value,) = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return int(value)

        return await self.write(op, durable=True)

    async def get_meta(self, key: str) -> str | None:
        """A value of the meta key/value table, None when the key is not there."""

        def op(c: sqlite3.Connection) -> str | None:
            found = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if found is None else str(found[0])

        return await self.read(op)

    async def set_meta(self, key: str, value: str | None) -> None:
        """Set a meta value durably; None deletes the key."""

        def op(c: sqlite3.Connection) -> None:
            if value is None:
                c.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                c.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

        await self.write(op, durable=True)


def _error(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"error": {"code": code.value, "message": message}}
