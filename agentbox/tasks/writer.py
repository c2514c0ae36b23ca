"""The store's transaction engine: one SQLite connection on one writer thread, group commits.

Every write is an op (a function of the connection). Ops that arrive while a transaction is in
flight wait and then share the next one, each inside its own SAVEPOINT so that one failing op
does not undo its neighbours. That is what makes a burst of submits cost one fsync. Whole
transactions run on the thread; nothing awaits per statement.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from agentbox.tasks.migrations import migrate

log = logging.getLogger("agentbox.store")
T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]


class StoreError(Exception):
    """The store could not do what was asked; the message says why in one line."""


class Writer:
    """Opens, checks and migrates the file; runs reads and batched writes on its thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Op, bool, asyncio.Future[Any]]] = []
        self._inflight = False
        self._sync = ""
        self.commits = 0
        # What ops leave for the loop (the store's new outbox events): writer thread only, and
        # handed over only for the ops that committed.
        self.staged: list[Any] = []
        self._closed = False

    def _after_commit(self, staged: list[Any]) -> None:
        """Called on the event loop after each batch with what its committed ops staged."""

    def _open_sync(self, _: None = None) -> tuple[int, int]:
        """Connect with the settings of DESIGN.md section 7, check, migrate; (from, to)."""
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA journal_size_limit=8388608")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute("PRAGMA foreign_keys=ON")
            (check,) = conn.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise StoreError(f"{self.path}: integrity check failed: {check}")
            versions = migrate(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the task store: {exc}") from None
        self._conn = conn
        return versions

    async def close(self) -> None:
        """Checkpoint the WAL into the main file and close; the next start reads one file."""
        if self._conn is None:
            return
        await self._call(self._close_sync)
        self._closed = True
        self._pool.shutdown(wait=True)

    def _close_sync(self, _: None = None) -> None:
        assert self._conn is not None
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("checkpoint at close failed: %s", exc)
        self._conn.close()
        self._conn = None

    async def _call(self, fn: Callable[[None], T]) -> T:
        if self._closed:
            raise StoreError("the task store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, None)

    async def read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on the writer thread (reads are short; one connection keeps it simple)."""

        def run(_: None) -> T:
            if self._conn is None:
                raise StoreError("the task store is closed")
            try:
                return op(self._conn)
            except sqlite3.Error as exc:
                raise StoreError(f"store read failed: {exc}") from None

        return await self._call(run)

    async def write(self, op: Callable[[sqlite3.Connection], T], durable: bool = False) -> T:
        """Queue a write op for the next group commit; durable ops make it synchronous=FULL."""
        if self._closed:
            raise StoreError("the task store is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._pending.append((op, durable, fut))
        if not self._inflight:
            self._inflight = True
            loop.call_soon(self._flush)  # let the rest of this loop tick join the batch
        return await fut

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            self._inflight = False
            return
        loop = asyncio.get_running_loop()
        cf = self._pool.submit(self._commit, [(op, durable) for op, durable, _ in batch])

        def done(f: Any) -> None:
            loop.call_soon_threadsafe(self._settle, batch, f)

        cf.add_done_callback(done)

    def _settle(self, batch: list[tuple[Op, bool, asyncio.Future[Any]]], f: Any) -> None:
        exc = f.exception()
        outcomes, staged = ([(False, exc)] * len(batch), []) if exc else f.result()
        self._after_commit(staged)
        for (_, _, fut), (ok, value) in zip(batch, outcomes, strict=True):
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        self._flush()

    def _commit(self, ops: list[tuple[Op, bool]]) -> tuple[list[tuple[bool, Any]], list[Any]]:
        conn = self._conn
        if conn is None:
            return [(False, StoreError("the task store is closed"))] * len(ops), []
        sync = "FULL" if any(d for _, d in ops) else "NORMAL"
        outcomes: list[tuple[bool, Any]] = []
        self.staged = []  # whatever a failed batch before left behind is void
        try:
            if sync != self._sync:
                conn.execute(f"PRAGMA synchronous={sync}")
                self._sync = sync
            conn.execute("BEGIN IMMEDIATE")
            for op, _ in ops:
                conn.execute("SAVEPOINT op")
                mark = len(self.staged)
                try:
                    outcomes.append((True, op(conn)))
                except Exception as exc:  # one op's failure must not undo its neighbours
                    if not conn.in_transaction:
                        raise
                    conn.execute("ROLLBACK TO op")
                    del self.staged[mark:]
                    outcomes.append((False, exc))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.error("store commit of %d ops failed: %s", len(ops), exc)
            err = StoreError(f"store write failed: {exc} (is the disk full or read-only?)")
            return [(False, err)] * len(ops), []
        self.commits += 1
        staged, self.staged = self.staged, []
        return outcomes, staged

    async def ping(self) -> None:
        """A round trip through the writer thread: proves it is not stuck."""
        await self.read(lambda c: c.execute("SELECT 1").fetchone())
