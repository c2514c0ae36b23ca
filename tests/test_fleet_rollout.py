"""`agentbox fleet update`: a staged rollout to two boxes of a pool against a real Mosquitto,
the bundle served by the command itself on loopback. Each box is a real daemon from an
installed release; its root updater (agentbox-update.path and .service on a box) is played by
a thread that runs the same flow.run_request when the daemon spools a request. A release
that rolls back on the first wave stops the rollout before the second box is asked; a good
one reaches both, the second only after the first is healthy on it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentbox.update import flow, record, request
from agentbox.update.releases import Tree
from tests.conftest import ROOT, wait_for
from tests.fakes import FakeProvider, openai_stream
from tests.mqtt_peer import Broker
from tests.test_update_kit import build_bundle, make_key
from tests.test_update_rollout import Rig

BOXES = ("box-a", "box-b")


class Updater:
    """Stands in for the root updater: takes each request the daemon spools and runs it."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.outcomes: list[flow.Outcome | None] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        spool = request.spool_path(self.rig.state)
        while not self._stop.wait(0.2):
            if spool.exists():
                self.outcomes.append(flow.run_request(spool, self.rig.box))

    def close(self) -> None:
        self._stop.set()
        self.thread.join(120)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("fleet")
    key, pub = make_key(work / "keys")
    return {
        "pub": pub,
        "0.1.0": build_bundle(work / "a", key, "0.1.0"),
        "0.2.0": build_bundle(work / "b", key, "0.2.0"),
        "0.2.1": build_bundle(work / "c", key, "0.2.1", "exit78"),
    }


@pytest.fixture
def fleet(short_tmp: Path, broker: Broker, made: dict[str, Path]) -> Iterator[dict[str, Any]]:
    fake = FakeProvider(default=openai_stream("done"))
    rigs: dict[str, Rig] = {}
    updaters: list[Updater] = []
    try:
        for device in BOXES:
            base = short_tmp / device
            base.mkdir()
            mqtt = (
                f"[device]\nid = '{device}'\n[mqtt]\nenabled = true\nhost = '127.0.0.1'\n"
                f"port = {broker.port}\npool = 'p1'\nhealth_interval_s = 5\n"
            )
            rig = rigs[device] = Rig(base, made["pub"], fake, mqtt)
            first = rig.update(made["0.1.0"])
            assert first.state == "succeeded", (first, rig.progress, rig.service.log()[-3000:])
            updaters.append(Updater(rig))
        operator = short_tmp / "operator"
        operator.mkdir()
        conf = operator / "agentbox.toml"
        conf.write_text(f"[mqtt]\nhost = '127.0.0.1'\nport = {broker.port}\n")
        env = {k: v for k, v in rigs["box-a"].env.items() if not k.startswith("AGENTBOX_")}
        env |= {"AGENTBOX_STATE_DIR": str(operator / "state"), "AGENTBOX_CONFIG": str(conf)}
        yield {"rigs": rigs, "env": env}
    finally:
        for u in updaters:
            u.close()
        for rig in rigs.values():
            rig.service.close()
        fake.close()
    for rig in rigs.values():
        assert "Traceback" not in rig.service.log()


def roll_out(env: dict[str, str], bundle: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentbox", "fleet", "update", "--pool", "p1", "--wave", "1",
         "--serve", "127.0.0.1:0", "--timeout", "120", "--json", str(bundle)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_a_staged_rollout_stops_on_a_rollback_and_goes_on_when_the_first_wave_is_healthy(
    fleet: dict[str, Any], made: dict[str, Path]
) -> None:
    a, b = fleet["rigs"]["box-a"], fleet["rigs"]["box-b"]
    b_starts = len(b.service.versions)

    bad = roll_out(fleet["env"], made["0.2.1"])
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    summary = json.loads(bad.stdout)
    assert summary["stopped"] and summary["failed"] == ["box-a"], summary
    assert summary["not_asked"] == ["box-b"]
    assert "box-a: failed (rolled_back:" in bad.stderr, bad.stderr
    assert "box-b: update to" not in bad.stderr
    assert Tree(a.root).current() == "0.1.0" and a.cli("status")["version"] == "0.1.0"
    # The second box was never asked: no request, no record, its daemon never restarted.
    assert not request.spool_path(b.state).exists()
    assert record.read(b.root) is None or record.read(b.root)["to"] == "0.1.0"  # type: ignore[index]
    assert len(b.service.versions) == b_starts

    a.submit(["during"])
    good = roll_out(fleet["env"], made["0.2.0"])
    assert good.returncode == 0, (good.stdout, good.stderr)
    summary = json.loads(good.stdout)
    assert summary["ok"] and not summary["failed"], summary
    assert [(v["device_id"], v["wave"], v["state"]) for v in summary["boxes"]] == [
        ("box-a", 1, "healthy"), ("box-b", 2, "healthy"),
    ]  # fmt: skip
    lines = good.stderr.splitlines()
    healthy_a = lines.index("fleet update: box-a: healthy")
    asked_b = next(i for i, line in enumerate(lines) if "box-b: update to 0.2.0 requested" in line)
    assert healthy_a < asked_b, good.stderr
    for rig in (a, b):
        assert rig.cli("status")["version"] == "0.2.0"
        last = record.read(rig.root)
        assert last is not None and (last["state"], last["to"]) == ("succeeded", "0.2.0")
    # Results left through the broker (the outbox is empty): the task's own state says it ran.
    wait_for(lambda: a.cli("tasks", "get", "during")["state"] == "succeeded", 90)
