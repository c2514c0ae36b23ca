"""WAL checkpoints off the commit path: a thread with its own connection copies the WAL into
the main file, so a commit waits for its own fsync only, never for the main file's.

SQLite's automatic checkpoint runs inside the commit that crosses 1,000 pages: that commit
(durable already) then also writes and fsyncs the main file, and its callers wait 50-250 ms
for it (README, "How it keeps tasks"). Durability is unchanged: a commit is durable once its
WAL frames are synced, before and after this change.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("agentbox.store")
EVERY_S = 2.0  # at most one checkpoint this often, and only after commits
# Past this the WAL is growing faster than the thread copies it (or the thread is stuck):
# the writer then checkpoints inline, as SQLite would, so the file stays bounded.
HARD_BYTES = 64 * 1024 * 1024


class Checkpointer:
    """Copies committed WAL frames into the main file (PASSIVE: never blocks the writer)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.wal = Path(f"{path}-wal")
        self.done = 0  # checkpoints run, for tests and the benchmark
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="store-checkpoint", daemon=True)
        self._thread.start()

    def committed(self, conn: sqlite3.Connection) -> None:
        """Writer thread, after each commit: wake the thread; checkpoint inline past the bound."""
        self._dirty.set()
        try:
            if self.wal.stat().st_size > HARD_BYTES:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except (OSError, sqlite3.Error) as exc:  # the commit stands; the next one tries again
            log.warning("inline checkpoint failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:  # the writer's bound still holds the WAL in check
            log.warning("checkpoint thread cannot open the store: %s", exc)
            return
        try:
            while not self._stop.is_set():
                self._dirty.wait()
                self._dirty.clear()
                if self._stop.is_set():
                    break
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    self.done += 1
                except sqlite3.Error as exc:
                    log.warning("background checkpoint failed: %s", exc)
                self._stop.wait(EVERY_S)
        finally:
            conn.close()
