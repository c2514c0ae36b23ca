"""Crashes, restarts, duplicate ids and failing disks: no task lost, none finished twice."""

from __future__ import annotations

import json
import resource
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NO_MQTT, children, dead_provider, free_port, outbox_mqtt, wait_for

FINAL = {"succeeded", "failed", "rejected", "expired", "cancelled"}


def _final_events(d: Any) -> Counter[str]:
    with d.db() as conn:
        rows = conn.execute("SELECT task_id FROM outbox WHERE event = 'result'").fetchall()
    return Counter(r["task_id"] for r in rows)


@pytest.mark.timeout(900)  # its own waits: 600 s for local generations beside a QEMU guest
def test_kill9_with_queued_and_running_tasks_then_restart(daemons: Any) -> None:
    d = daemons(outbox_mqtt(free_port())).start()
    ids = [f"crash-{i}" for i in range(8)]
    for i in ids:
        d.cli(
            "submit",
            "--id",
            i,
            "--tier",
            "local",
            "--max-tokens",
            "48",
            "Write a short poem about the sea.",
        )

    def running() -> bool:  # read the store itself: a CLI round trip is slow enough to race
        with closing(d.db()) as conn:
            return (
                conn.execute("SELECT 1 FROM tasks WHERE state = 'running'").fetchone() is not None
            )

    wait_for(running, 60, interval=0.01, what="a running task")
    worker_pids = children(d.proc.pid)
    d.kill9()
    # The worker follows its daemon at once instead of finishing a generation for nobody.
    wait_for(
        lambda: not any(Path(f"/proc/{p}").exists() for p in worker_pids), 10, what="worker gone"
    )

    with d.db() as conn:
        states = Counter(r["state"] for r in conn.execute("SELECT state FROM tasks"))
    assert states["running"] == 1 and states["queued"] >= 1, states

    d.start()
    assert "recovered after an unclean stop: 1 task(s) requeued" in d.log()
    wait_for(
        lambda: all(t["state"] in FINAL for t in d.json("tasks", "list")),
        600,  # local generations: a minute alone, much longer beside a QEMU guest
        interval=0.5,
        what="all tasks final",
    )
    tasks = {t["id"]: t for t in d.json("tasks", "list")}
    assert set(tasks) == set(ids)
    assert all(t["state"] == "succeeded" for t in tasks.values()), tasks
    assert sorted(t["attempts"] for t in tasks.values())[-1] == 2  # the interrupted one ran again
    assert _final_events(d) == Counter({i: 1 for i in ids})
    assert "Traceback" not in d.log()
    assert d.stop() == 0


def test_second_submit_with_known_id_runs_nothing(daemons: Any) -> None:
    d = daemons(outbox_mqtt(free_port())).start()
    first = d.json("submit", "--id", "same-1", "--wait", "--max-tokens", "8", "Say hi.")
    assert first["state"] == "succeeded"
    again = d.json("submit", "--id", "same-1", "--wait", "A different prompt entirely.")
    assert again["id"] == "same-1"
    assert again["output"] == first["output"]
    assert again["attempts"] == 1
    with d.db() as conn:
        events = [
            r["event"] for r in conn.execute("SELECT event FROM outbox WHERE task_id = 'same-1'")
        ]
    assert events == ["accepted", "running", "result"]
    assert d.stop() == 0


def test_store_write_failure_is_one_clear_error_and_loses_nothing(daemons: Any) -> None:
    # A file size limit makes SQLite's writes fail the way a full disk does (Python ignores
    # SIGXFSZ, so write() returns EFBIG); the daemon itself stays up.
    limit = 600_000

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    d = daemons("[local]\nenabled = false\n[tasks]\nmax_attempts = 1\n" + dead_provider() + NO_MQTT)
    d.start(preexec=small_disk)
    accepted: list[str] = []
    failure = None
    big = "x" * 40_000
    for i in range(60):
        proc = d.cli(
            "submit",
            "--id",
            f"disk-{i}",
            "--tier",
            "cloud",
            "--json",
            json.dumps({"text": big}),
            check=False,
        )
        if proc.returncode == 0:
            accepted.append(f"disk-{i}")
        else:
            failure = proc
            break
    assert failure is not None, "the size limit never bit"
    assert accepted
    err = failure.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "store_unavailable" in err and "disk full" in err, err
    assert "Traceback" not in err
    assert d.proc.poll() is None, "the daemon died"
    d.stop()
    assert "Traceback" not in d.log()

    d.start()
    for task_id in accepted:
        assert d.task(task_id)["state"] in FINAL | {"queued"}
    assert d.stop() == 0
