"""Store migrations declare whether they are additive; a release uses a store that a newer one
migrated past it only when every step beyond its own is additive (the floor the newer release
wrote says so), and refuses it otherwise."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from agentbox.tasks.migrations import FLOOR_KEY, STEPS, SchemaTooNew, floor, migrate


def _migrated(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn) == (0, len(STEPS))
    return conn


def test_a_migration_records_the_oldest_schema_that_can_use_the_store(tmp_path: Path) -> None:
    with closing(_migrated(tmp_path / "s.db")) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (FLOOR_KEY,)).fetchone()
        assert row == (str(floor()),)
    assert floor() == 0, "a shipped step is not additive: say so in docs/updates.md"


@pytest.mark.parametrize(
    ("written_floor", "usable"),
    [(None, False), (len(STEPS), True), (len(STEPS) + 1, False)],
    ids=["newer-release-said-nothing", "additive-past-us", "not-additive-past-us"],
)
def test_a_store_from_a_newer_release_is_used_only_when_additive_past_us(
    tmp_path: Path, written_floor: int | None, usable: bool
) -> None:
    with closing(_migrated(tmp_path / "s.db")) as conn:
        # What a newer release with one more step leaves behind.
        conn.execute("CREATE TABLE newer (k TEXT PRIMARY KEY)")
        conn.execute(f"PRAGMA user_version = {len(STEPS) + 1}")
        conn.execute("DELETE FROM meta WHERE key = ?", (FLOOR_KEY,))
        if written_floor is not None:
            conn.execute("INSERT INTO meta VALUES (?, ?)", (FLOOR_KEY, str(written_floor)))
        if usable:
            assert migrate(conn) == (len(STEPS) + 1, len(STEPS) + 1)
        else:
            with pytest.raises(SchemaTooNew):
                migrate(conn)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(STEPS) + 1
