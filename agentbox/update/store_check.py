"""The store before a switch: a copy (SQLite's backup API), a migration dry run on it by the
new release, and whether the previous release could still open the migrated copy."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

from agentbox.tasks.migrations import FLOOR_KEY

# What every release so far has: its migrations module. Run by a release's own Python, so
# the check is that release's code, not ours.
MIGRATE = (
    "import sqlite3, sys\n"
    "from agentbox.tasks.migrations import migrate\n"
    "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "print(*migrate(conn))\n"
)


class StoreCheckError(Exception):
    """The store cannot be copied or migrated; one line."""


@contextlib.contextmanager
def _reading(src: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a live store (the daemon may be writing); the WAL files
    SQLite makes meanwhile are given to the store's owner, as the store is."""
    sidecars = [Path(f"{src}{s}") for s in ("-wal", "-shm")]
    existed = {p for p in sidecars if p.exists()}
    try:
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        try:
            yield source
        finally:
            source.close()
    finally:
        st = src.stat() if src.exists() else None
        for p in sidecars:
            if st is not None and p.exists() and p not in existed:
                with contextlib.suppress(OSError):
                    os.chown(p, st.st_uid, st.st_gid)


def copy(src: Path, dst: Path) -> None:
    """A consistent copy of a live store, mode 0600."""
    try:
        with _reading(src) as source:
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            target = sqlite3.connect(dst)
            try:
                source.backup(target)
            finally:
                target.close()
    except sqlite3.Error as exc:
        raise StoreCheckError(f"cannot copy the store {src}: {exc}") from None


def schema_of(db: Path) -> tuple[int, int | None] | None:
    """(schema version, the oldest schema that can use it as its last migration wrote) of a
    store; None when there is no store yet. The floor is None when no release wrote one."""
    if not db.exists():
        return None
    try:
        with _reading(db) as conn:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = ?", (FLOOR_KEY,)).fetchone()
            except sqlite3.OperationalError:  # a store older than the meta table
                row = None
    except sqlite3.Error as exc:
        raise StoreCheckError(f"cannot read the store {db}: {exc}") from None
    floor = int(row[0]) if row and str(row[0]).isdigit() else None
    return int(version), floor


def restore(backup: Path, store: Path) -> None:
    """Put a backup copy back in place of the store (the daemon is stopped)."""
    st = store.stat()
    for s in ("-wal", "-shm"):
        Path(f"{store}{s}").unlink(missing_ok=True)
    tmp = store.with_name(f".{store.name}.restore")
    tmp.unlink(missing_ok=True)
    copy(backup, tmp)
    os.chown(tmp, st.st_uid, st.st_gid)
    tmp.replace(store)


def migrate_with(release: Path, db: Path) -> tuple[int, int]:
    """Run release's migrations on db; (from_version, to_version) or StoreCheckError."""
    proc = subprocess.run(
        [str(release / "bin" / "python"), "-I", "-c", MIGRATE, str(db)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise StoreCheckError(lines[-1] if lines else f"exit status {proc.returncode}")
    a, b = proc.stdout.split()
    return int(a), int(b)
