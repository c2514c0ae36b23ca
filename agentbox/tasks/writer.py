"""The store's transaction engine: one SQLite connection on one writer thread, group commits.

Every write is an op (a function of the connection). Ops that arrive while a transaction is in
flight wait and then share the next one, each inside its own SAVEPOINT so that one failing op
does not undo its neighbours. That is what makes a burst of submits cost one fsync. Whole
transactions run on the thread; nothing awaits per statement.

A batch that fails for a reason outside the ops (a full disk, an I/O error) is not failed: it
waits and is tried again with backoff, with whatever joined it meanwhile, until writes work
again. Nothing is dropped and nobody is told "stored" before it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from agentbox.tasks.migrations import SchemaTooNew, migrate

log = logging.getLogger("agentbox.store")
T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]
# Errors of the disk, not of the ops: the same batch can succeed once space or the device is back.
TRANSIENT = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_BUSY})
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0
STILL_FAILING_LOG_S = 60.0


class StoreError(Exception):
    """The store could not do what was asked; the message says why in one line."""


class _Transient(StoreError):
    """The whole batch failed on the disk (full, I/O error): it is retried, never dropped."""


def transient(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in TRANSIENT


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
        # What ops leave for the loop (the store's events for its hub): writer thread only, and
        # handed over only for the ops that committed.
        self.staged: list[Any] = []
        self._closed = False
        # While a batch waits to be retried: why writes fail, since when, and its timer.
        self.failing = ""
        self.failing_since = 0.0
        self._retry_in = RETRY_FIRST_S
        self._retry_timer: asyncio.TimerHandle | None = None
        self._logged_at = 0.0

    def _after_commit(self, staged: list[Any]) -> None:
        """Called on the event loop after each batch with what its committed ops staged."""

    def _open_sync(self, _: None = None) -> tuple[int, int]:
        """Connect with the store settings (README, "How it keeps tasks"), check, migrate."""
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
        except SchemaTooNew as exc:
            # A rollback past a non-additive migration: a clear exit 78, not a restart loop.
            raise StoreError(
                f"{self.path}: {exc}: start the release that wrote it, or restore the copy"
                " `agentbox update` kept (docs/updates.md)"
            ) from None
        self._conn = conn
        return versions

    async def close(self) -> None:
        """Checkpoint the WAL into the main file and close; the next start reads one file.
        Writes still waiting for a failing disk are refused (their callers never heard
        "stored", so a redelivery or a requeue at the next start redoes them)."""
        if self._conn is None:
            return
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
            waiting, self._pending = self._pending, []
            err = StoreError(f"the task store closed while writes failed ({self.failing})")
            for _, _, fut in waiting:
                if not fut.done():
                    fut.set_exception(err)
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

    async def write(
        self,
        op: Callable[[sqlite3.Connection], T],
        durable: bool = False,
        patience: float | None = None,
    ) -> T:
        """Queue a write op for the next group commit; durable ops make it synchronous=FULL.
        While the disk fails the op waits for it; with `patience`, it is withdrawn after that
        many seconds of failing writes and StoreError says why (nothing of it was stored)."""
        if self._closed:
            raise StoreError("the task store is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._pending.append((op, durable, fut))
        if not self._inflight:
            self._inflight = True
            loop.call_soon(self._flush)  # let the rest of this loop tick join the batch
        if patience is None:
            return await fut
        while True:
            done, _ = await asyncio.wait({fut}, timeout=patience)
            if done:
                return fut.result()
            if not self.failing:
                return await fut  # only slow: it will be stored
            if self._withdraw(fut):
                raise StoreError(f"{self.failing}; nothing was stored")

    def _withdraw(self, fut: asyncio.Future[Any]) -> bool:
        """Take a waiting op out of the queue; False when its batch is being committed."""
        for i, (_, _, f) in enumerate(self._pending):
            if f is fut:
                del self._pending[i]
                fut.cancel()
                return True
        return False

    def _flush(self) -> None:
        self._retry_timer = None
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
        if isinstance(exc, _Transient) and not self._closed:
            self._pending = batch + self._pending  # in order, ahead of what joined meanwhile
            self._wait_and_retry(exc)
            return
        if self.failing and not exc:
            log.warning(
                "store writes work again after %.0f s; %d waiting op(s) stored",
                time.monotonic() - self.failing_since,
                len(batch),
            )
            self.failing, self._retry_in = "", RETRY_FIRST_S
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

    def _wait_and_retry(self, exc: StoreError) -> None:
        now = time.monotonic()
        if not self.failing:
            self.failing_since = self._logged_at = now
            log.error("%s; retrying until writes work again", exc)
        elif now - self._logged_at >= STILL_FAILING_LOG_S:
            self._logged_at = now
            log.error(
                "%s; %d op(s) waiting for %.0f s", exc, len(self._pending), now - self.failing_since
            )
        self.failing = str(exc)
        delay, self._retry_in = self._retry_in, min(self._retry_in * 2, RETRY_MAX_S)
        self._retry_timer = asyncio.get_running_loop().call_later(delay, self._flush)

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
                    if not conn.in_transaction or (
                        isinstance(exc, sqlite3.Error) and transient(exc)
                    ):
                        raise  # the disk's fault, not the op's: the whole batch waits
                    conn.execute("ROLLBACK TO op")
                    del self.staged[mark:]
                    outcomes.append((False, exc))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self._sync = ""  # set it again on the next try, whatever this one left
            err = f"store write failed: {exc} (is the disk full or read-only?)"
            if transient(exc):
                raise _Transient(err) from None
            log.error("store commit of %d ops failed: %s", len(ops), exc)
            return [(False, StoreError(err))] * len(ops), []
        self.commits += 1
        staged, self.staged = self.staged, []
        return outcomes, staged

    async def ping(self) -> None:
        """A round trip through the writer thread: proves it is not stuck."""
        await self.read(lambda c: c.execute("SELECT 1").fetchone())
