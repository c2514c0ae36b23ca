"""Notes that agent tasks keep for later runs: a small key-value table in the task store.

Writes are idempotent (a key's text is replaced), so a retried attempt that writes again
leaves the same note.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any, TypedDict

from agentbox.agent.tools import MAX_NOTES, Note
from agentbox.operations import Caller, Empty, Operation, typed_op
from agentbox.tasks.writer import Writer
from agentbox.vocabulary import ErrorCode, SpecError


@dataclass(frozen=True)
class NoteKey:
    key: str


class NoteList(TypedDict):
    notes: list[dict[str, Any]]


class NoteDeleted(TypedDict):
    deleted: str


class NoteStore:
    """Implements agent.tools.Notes on the task store; also the `notes` control ops."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    async def put(self, key: str, text: str, task_id: str) -> bool:
        """Create or replace; False when the box already holds MAX_NOTES other notes."""

        def op(c: sqlite3.Connection) -> bool:
            known = c.execute("SELECT 1 FROM notes WHERE key = ?", (key,)).fetchone()
            if known is None:
                (count,) = c.execute("SELECT count(*) FROM notes").fetchone()
                if count >= MAX_NOTES:
                    return False
            c.execute(
                "INSERT INTO notes (key, text, task_id, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET text = excluded.text,"
                " task_id = excluded.task_id, updated_at = excluded.updated_at",
                (key, text, task_id, time.time()),
            )
            return True

        return await self.writer.write(op, durable=True)

    async def get(self, key: str) -> Note | None:
        def op(c: sqlite3.Connection) -> Note | None:
            r = c.execute(
                "SELECT key, text, task_id, updated_at FROM notes WHERE key = ?", (key,)
            ).fetchone()
            return Note(*r) if r else None

        return await self.writer.read(op)

    async def all(self) -> list[Note]:
        def op(c: sqlite3.Connection) -> list[Note]:
            rows = c.execute("SELECT key, text, task_id, updated_at FROM notes ORDER BY key")
            return [Note(*r) for r in rows.fetchall()]

        return await self.writer.read(op)

    async def delete(self, key: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            return c.execute("DELETE FROM notes WHERE key = ?", (key,)).rowcount == 1

        return await self.writer.write(op, durable=True)

    # ---- control ops (agentbox notes ...) ----------------------------------------------

    def ops(self) -> list[Operation[Any, Any]]:
        return [
            typed_op("notes_list", Empty, self.op_list),
            typed_op("notes_delete", NoteKey, self.op_delete),
        ]

    async def op_list(self, _: Empty, __: Caller) -> NoteList:
        return {"notes": [n.listed() for n in await self.all()]}

    async def op_delete(self, req: NoteKey, _: Caller) -> NoteDeleted:
        if not await self.delete(req.key):
            raise SpecError(ErrorCode.not_found, f"no note named {req.key!r}")
        return {"deleted": req.key}
