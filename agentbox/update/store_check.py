"""The store before a switch: a copy (SQLite's backup API), a migration dry run on it by the
new release, and whether the previous release could still open the migrated copy."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from pathlib import Path

DB_NAME = "agentbox.db"
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


def copy(src: Path, dst: Path) -> None:
    """A consistent copy of a live store (the daemon may be writing), mode 0600."""
    sidecars = [Path(f"{src}{s}") for s in ("-wal", "-shm")]
    existed = {p for p in sidecars if p.exists()}
    try:
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        try:
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            target = sqlite3.connect(dst)
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise StoreCheckError(f"cannot copy the store {src}: {exc}") from None
    finally:
        # Files SQLite made while we read belong to the daemon's user, as the store does.
        st = src.stat() if src.exists() else None
        for p in sidecars:
            if st is not None and p.exists() and p not in existed:
                with contextlib.suppress(OSError):
                    os.chown(p, st.st_uid, st.st_gid)


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
