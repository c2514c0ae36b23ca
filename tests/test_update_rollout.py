"""Updates end to end on real releases and a real daemon: a good one switches and tasks go on;
one that exits 78, one that never sends READY and one whose watchdog stops are each rolled back
by themselves, the old release serving again and every task accepted before finishing once."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from agentbox.tasks.migrations import STEPS
from agentbox.update import flow, record
from agentbox.update.releases import Tree
from agentbox.update.service import parse_show
from tests.conftest import ROOT, free_port, outbox_mqtt, wait_for
from tests.fakes import FakeProvider, openai_stream
from tests.test_update_kit import ChildService, build_bundle, make_key, snapshot

WATCHDOG_S = 2.0
READY_TIMEOUT_S = 12.0
PROBATION_S = 5.0
BAD = {"0.2.1": "exit78", "0.2.2": "noready", "0.2.3": "nowatchdog"}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("rollout")
    key, pub = make_key(work / "keys")
    made = {"pub": pub}
    for version in ("0.1.0", "0.2.0"):
        made[version] = build_bundle(work / version, key, version)
    for version, behaviour in BAD.items():
        made[version] = build_bundle(work / version, key, version, behaviour)
    made["0.2.9"] = build_bundle(work / "0.2.9", key, "0.2.9", "badconfig")
    made["0.3.0"] = build_bundle(work / "0.3.0", key, "0.3.0", "noready", "not-additive")
    made["0.3.1"] = build_bundle(work / "0.3.1", key, "0.3.1", "noready", "additive")
    made["0.4.0"] = build_bundle(work / "0.4.0", key, "0.4.0", "", "not-additive")
    made["0.4.1"] = build_bundle(work / "0.4.1", key, "0.4.1", "", "additive")
    return made


class Rig:
    """One box: a release tree, a state dir, a fake cloud provider, the daemon under a
    ChildService, and the CLI of this checkout talking to that daemon."""

    def __init__(self, base: Path, pub: Path, fake: FakeProvider, mqtt: str = "") -> None:
        self.root, self.state, self.keys = base / "opt", base / "state", base / "keys"
        self.keys.mkdir()
        (self.keys / "release.pub").write_bytes(pub.read_bytes())
        self.conf = base / "agentbox.toml"
        self.conf.write_text(
            # No broker by default: results wait in the outbox, countable.
            (mqtt or outbox_mqtt(free_port()))
            + "[local]\nenabled = false\n[tasks]\ncloud_concurrency = 2\n"
            + f"[providers.c]\nkind = 'openai'\nmodel = 'gpt-4o-mini'\nbase_url = '{fake.url}/v1'\n"
        )
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTBOX_", "NOTIFY_"))}
        self.env = keep | {
            "AGENTBOX_STATE_DIR": str(self.state),
            "AGENTBOX_CONFIG": str(self.conf),
            "AGENTBOX_UPDATE__ROOT": str(self.root),
            "AGENTBOX_DEVICE__REACH_CHECK": f"127.0.0.1:{free_port()}",
        }
        self.service = ChildService(self.root, self.env, base / "notify.sock", WATCHDOG_S)
        self.progress: list[str] = []
        self.box = flow.Box(
            root=self.root, keys_dir=self.keys, state_dir=self.state, manager=self.service,
            ready_timeout_s=READY_TIMEOUT_S, probation_s=PROBATION_S,
            config_args=["--config", str(self.conf)], progress=self.progress.append,
        )  # fmt: skip

    def update(self, bundle: Path) -> flow.Outcome:
        return flow.update(bundle, None, self.box)

    def cli(self, *args: str) -> Any:
        proc = subprocess.run(
            [sys.executable, "-m", "agentbox", *args, "--json"], env=self.env, cwd=ROOT,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, (args, proc.stderr, self.service.log()[-3000:])
        return json.loads(proc.stdout)

    def submit(self, ids: list[str]) -> None:
        for i in ids:
            self.cli("submit", "--id", i, "--tier", "cloud", "--max-tokens", "16", f"Task {i}.")

    def results(self) -> Counter[str]:
        db = self.state / "agentbox.db"
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT task_id FROM outbox WHERE event = 'result'").fetchall()
        return Counter(r[0] for r in rows)

    def all_succeeded(self, ids: list[str]) -> None:
        def done() -> bool:
            tasks = {t["id"]: t["state"] for t in self.cli("tasks", "list")}
            return all(tasks.get(i) == "succeeded" for i in ids)

        wait_for(done, 90, interval=0.5, what="every task succeeded")
        assert self.results() == Counter({i: 1 for i in ids}), "a task finished twice or never"


@pytest.fixture
def rig(short_tmp: Path, bundles: dict[str, Path]) -> Iterator[Rig]:
    fake = FakeProvider(default=openai_stream("done"))
    fake.default.delay = 0.4  # tasks are still running and queued when the update stops them
    r = Rig(short_tmp, bundles["pub"], fake)
    first = r.update(bundles["0.1.0"])  # a first install: no release before it
    assert first.state == "succeeded", (first, r.progress, r.service.log()[-3000:])
    yield r
    r.service.close()
    fake.close()
    assert "Traceback" not in r.service.log()


def _rolled_back(r: Rig, outcome: flow.Outcome, new: str, why: str) -> None:
    assert outcome.code == flow.ROLLED_BACK and outcome.state == "rolled_back", outcome
    assert outcome.old == "0.1.0" and outcome.new == new
    assert why in str(outcome.error), outcome.error
    assert Tree(r.root).current() == "0.1.0"
    assert r.service.state().active == "active"
    assert r.service.versions[-1] == "0.1.0"
    assert r.cli("status")["version"] == "0.1.0"  # the old release is serving
    last = record.read(r.root)
    assert last is not None and last["state"] == "rolled_back", last
    assert (last["from"], last["to"]) == ("0.1.0", new) and why in last["error"]
    assert r.cli("releases")["update"]["state"] == "rolled_back"


def test_good_update_switches_and_tasks_go_on(rig: Rig, bundles: dict[str, Path]) -> None:
    before = [f"before-{i}" for i in range(8)]
    rig.submit(before)
    outcome = rig.update(bundles["0.2.0"])
    assert outcome.state == "succeeded" and outcome.code == flow.OK, (outcome, rig.progress)
    assert (outcome.old, outcome.new) == ("0.1.0", "0.2.0")
    assert rig.cli("status")["version"] == "0.2.0"
    listed = {r["version"]: r for r in rig.cli("releases")["releases"]}
    assert listed["0.2.0"]["current"] and listed["0.1.0"]["previous"]
    assert not (rig.root / "releases" / "0.2.0" / "bin" / "pip").exists()
    after = ["after-1", "after-2"]
    rig.submit(after)
    rig.all_succeeded(before + after)
    assert any("READY after" in line for line in rig.progress), rig.progress
    assert record.read(rig.root) is not None and record.read(rig.root)["state"] == "succeeded"  # type: ignore[index]
    again = rig.update(bundles["0.2.0"])
    assert again.state == "current" and again.code == flow.OK


@pytest.mark.parametrize(
    ("version", "why"),
    [
        ("0.2.1", "it stopped (exit-code, exit status 78)"),
        ("0.2.2", f"it did not report READY within {READY_TIMEOUT_S:g} s"),
        ("0.2.3", "its watchdog stopped"),
    ],
    ids=["exit78", "never-ready", "watchdog-stops"],
)
def test_bad_update_rolls_back_by_itself_and_loses_no_task(
    rig: Rig, bundles: dict[str, Path], version: str, why: str
) -> None:
    ids = [f"t{version}-{i}" for i in range(10)]
    rig.submit(ids)
    outcome = rig.update(bundles[version])
    _rolled_back(rig, outcome, version, why)
    assert not (rig.root / "releases" / version).exists(), "the failed release was kept"
    assert rig.service.versions[-2:] == [version, "0.1.0"] or why.startswith("its watchdog")
    rig.all_succeeded(ids)
    # Still serving after the rollback: new work runs on the old release.
    rig.submit(["later"])
    rig.all_succeeded([*ids, "later"])


def test_release_whose_config_check_fails_is_never_switched_to(
    rig: Rig, bundles: dict[str, Path]
) -> None:
    starts = len(rig.service.versions)
    outcome = rig.update(bundles["0.2.9"])
    assert outcome.state == "failed" and outcome.code == flow.NOT_INSTALLED, outcome
    assert "config check failed: agentbox: bad configuration" in str(outcome.error)
    assert Tree(rig.root).current() == "0.1.0"
    assert len(rig.service.versions) == starts  # the running daemon was never touched
    assert rig.service.state().active == "active"
    last = record.read(rig.root)
    assert last is not None and last["state"] == "failed"


def test_rollback_across_a_migration_the_old_release_cannot_open(
    rig: Rig, bundles: dict[str, Path]
) -> None:
    ids = [f"m-{i}" for i in range(6)]
    rig.submit(ids)
    outcome = rig.update(bundles["0.3.0"])
    said = " ".join(outcome.notes)
    assert f"store schema migrates from v{len(STEPS)} to v{len(STEPS) + 1}" in said
    assert "release 0.1.0 cannot open the migrated store" in said
    assert "a copy is kept in" in said and "would be lost" in said
    _rolled_back(rig, outcome, "0.3.0", "did not report READY")
    db = rig.state / "agentbox.db"
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(STEPS)
    assert (rig.state / "agentbox.db.before-0.3.0").exists()
    rig.all_succeeded(ids)


def test_rollback_across_an_additive_migration_keeps_the_migrated_store(
    rig: Rig, bundles: dict[str, Path]
) -> None:
    """A step declared additive: the old release uses the migrated store as it is, so no copy
    is kept and a rollback loses nothing (no task accepted on probation would be lost)."""
    ids = [f"am-{i}" for i in range(6)]
    rig.submit(ids)
    outcome = rig.update(bundles["0.3.1"])
    said = " ".join(outcome.notes)
    assert f"store schema migrates from v{len(STEPS)} to v{len(STEPS) + 1}" in said
    assert "release 0.1.0 can still open the migrated store: a rollback costs nothing" in said
    _rolled_back(rig, outcome, "0.3.1", "did not report READY")
    db = rig.state / "agentbox.db"
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(STEPS) + 1
    assert not list(rig.state.glob("agentbox.db.before-*"))
    rig.submit(["after-rollback"])
    rig.all_succeeded([*ids, "after-rollback"])


def test_a_downgrade_goes_in_only_when_asked_for_and_tasks_go_on(
    rig: Rig, bundles: dict[str, Path]
) -> None:
    """Past an additive step the older release can still use the store: asked for, it is
    installed like any update (and the newer one kept as previous)."""
    up = rig.update(bundles["0.4.1"])
    assert up.state == "succeeded", (up, rig.progress)
    ids = [f"dg-{i}" for i in range(6)]
    rig.submit(ids)
    before = snapshot(rig.root)
    refused = rig.update(bundles["0.1.0"])
    assert (refused.code, refused.state) == (flow.REFUSED, "refused"), refused
    assert "release 0.1.0 is older than the current 0.4.1" in str(refused.error)
    assert snapshot(rig.root) == before, "a refused downgrade changed the release tree"
    down = flow.update(bundles["0.1.0"], None, rig.box, allow_downgrade=True)
    assert (down.code, down.state, down.old, down.new) == (flow.OK, "succeeded", "0.4.1", "0.1.0")
    assert rig.cli("status")["version"] == "0.1.0"
    assert (Tree(rig.root).current(), Tree(rig.root).previous()) == ("0.1.0", "0.4.1")
    rig.submit(["after-downgrade"])
    rig.all_succeeded([*ids, "after-downgrade"])


def test_a_downgrade_past_a_step_not_additive_is_refused_even_when_asked_for(
    rig: Rig, bundles: dict[str, Path]
) -> None:
    up = rig.update(bundles["0.4.0"])
    assert up.state == "succeeded", (up, rig.progress)
    ids = [f"nd-{i}" for i in range(4)]
    rig.submit(ids)
    before = snapshot(rig.root)
    down = flow.update(bundles["0.1.0"], None, rig.box, allow_downgrade=True)
    assert (down.code, down.state) == (flow.REFUSED, "refused"), down
    want = f"release 0.1.0 (store schema v{len(STEPS)}) cannot open this box's store (schema v"
    assert want in str(down.error) and f"usable from schema v{len(STEPS) + 1} on" in str(down.error)
    assert snapshot(rig.root) == before and rig.cli("status")["version"] == "0.4.0"
    rig.all_succeeded(ids)


def test_systemctl_show_is_read_as_the_service_state() -> None:
    s = parse_show(
        "ActiveState=activating\nSubState=auto-restart\nNRestarts=2\nResult=watchdog\n"
        "ExecMainStatus=0\n"
    )
    assert (s.active, s.sub, s.restarts, s.result, s.exit_status) == (
        "activating", "auto-restart", 2, "watchdog", 0,
    )  # fmt: skip
