"""WAL checkpoints run on the checkpointer's thread, not inside a commit, and the WAL stays
bounded when that thread cannot keep up."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from agentbox.tasks import checkpoint
from agentbox.tasks.store import Store

ROWS = 1500  # 4 KB values: past SQLite's 1,000-page automatic checkpoint in one commit


def fill(c: sqlite3.Connection) -> None:
    c.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        ((f"k{i}", "x" * 4000) for i in range(ROWS)),
    )


async def main_file_grows(path: Path, past: int, within_s: float) -> bool:
    for _ in range(int(within_s / 0.05)):
        if path.stat().st_size > past:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_commit_leaves_the_checkpoint_to_the_thread(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db", outbox=False)
    await store.open()
    store.checkpointer.stop()  # so that only a commit could copy the WAL
    before = store.path.stat().st_size
    await store.write(fill, durable=True)
    assert store.path.stat().st_size == before  # the commit did not checkpoint
    assert Path(f"{store.path}-wal").stat().st_size > ROWS * 4000
    await store.close()
    assert store.path.stat().st_size > ROWS * 4000  # close still folds the WAL in


async def test_the_thread_copies_the_wal_into_the_main_file(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db", outbox=False)
    await store.open()
    try:
        await store.write(fill, durable=True)
        assert await main_file_grows(store.path, ROWS * 4000, within_s=20)
        assert store.checkpointer.done >= 1
        assert await store.get_meta("k7") == "x" * 4000
    finally:
        await store.close()


async def test_past_the_bound_the_writer_checkpoints_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "HARD_BYTES", 1024 * 1024)
    store = Store(tmp_path / "c.db", outbox=False)
    await store.open()
    try:
        store.checkpointer.stop()
        await store.write(fill, durable=True)
        assert store.path.stat().st_size > ROWS * 4000
    finally:
        await store.close()
