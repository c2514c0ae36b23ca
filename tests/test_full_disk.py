"""A full disk under a running box: work waits for space instead of getting stuck, and comes
back by itself when space does: every task finishes, every provider call has its ledger row."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.fakes import FakeProvider
from tests.mqtt_peer import Broker, Peer
from tests.test_budget_cap import MODEL, Billing

PREFIX = "agentbox/v1"


@pytest.fixture
def small_disk(short_tmp: Path) -> Iterator[Path]:
    """A 24 MB tmpfs as the state dir (the daemon's config and log stay outside it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = short_tmp / "state"
    path.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(path)], check=True
    )
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Write a dummy file until the disk is full."""
    dummy = disk / "dummy"
    chunk = b"\0" * 65536
    with dummy.open("wb") as f, suppress(OSError):
        while True:
            f.write(chunk)
            f.flush()
    with suppress(OSError), dummy.open("ab") as f:  # and the last few bytes
        while True:
            f.write(b"\0" * 512)
            f.flush()
    return dummy


def test_a_full_disk_holds_work_and_everything_finishes_once_space_is_back(
    daemons: Any, small_disk: Path, fake: FakeProvider, short_tmp: Path
) -> None:
    billing = Billing(delay=2.0)  # the first tasks are at the provider when the disk fills
    fake.answer = billing
    broker = Broker(short_tmp).start()
    peer: Peer | None = None
    try:
        conf = (
            "[device]\nid = 'box1'\n[local]\nenabled = false\n"
            f"[mqtt]\nhost = '127.0.0.1'\nport = {broker.port}\n"
            f"[providers.c]\nkind = 'openai'\nmodel = '{MODEL}'\nbase_url = '{fake.url}/v1'\n"
            "[tasks]\ncloud_concurrency = 8\n"
        )
        d = daemons(conf).start()
        wait_for(lambda: d.json("status")["mqtt"]["connected"], 20, what="mqtt connected")
        peer = Peer(broker.port)
        base = f"{PREFIX}/box1"
        peer.subscribe(f"{base}/task/+/result")
        text = "Summarise: " + "the quarterly figures, line by line. " * 300  # new pages each

        def submit(task_id: str) -> None:
            assert peer is not None
            # Not Peer.publish: it waits for the PUBACK, which the box holds while the disk is
            # full (a request is acknowledged once it is stored).
            body = {"id": task_id, "prompt": text, "tier": "cloud", "max_tokens": 64}
            peer.client.publish(f"{base}/task/submit", json.dumps(body), qos=1)

        early = [f"early-{i}" for i in range(8)]
        for task_id in early:
            submit(task_id)
        wait_for(lambda: len(fake.requests) == 8, 30, what="8 calls at the provider")
        dummy = fill(small_disk)
        late = [f"late-{i}" for i in range(40)]
        for task_id in late:
            submit(task_id)
        wait_for(lambda: "retrying until writes work again" in d.log(), 30, what="writes failing")
        # The early calls answered meanwhile; nothing new may leave the box unbooked.
        called_while_full = len(fake.requests)
        dummy.unlink()

        ids = early + late

        def results() -> Counter[str]:
            assert peer is not None
            return Counter(body["id"] for _, body, _, _ in peer.on(f"{base}/task/+/result"))

        wait_for(lambda: set(results()) == set(ids), 90, what="every task answered")
        answered = results()
        assert all(answered[i] == 1 for i in ids), answered
        with closing(d.db()) as conn:
            states = Counter(r["state"] for r in conn.execute("SELECT state FROM tasks"))
            rows, in_flight = conn.execute(
                "SELECT count(*), coalesce(sum(in_flight), 0) FROM usage"
            ).fetchone()
        assert states == {"succeeded": len(ids)}, states
        print(
            f"\nfull disk: {called_while_full} provider calls before space came back,"
            f" {len(fake.requests)} in all, {rows} ledger rows"
        )
        assert called_while_full == 8, "a call left the box while nothing could book it"
        assert rows == len(fake.requests) == len(ids) and in_flight == 0
        assert "store writes work again" in d.log()
        assert d.stop() == 0
    finally:
        if peer is not None:
            peer.close()
        broker.stop()
