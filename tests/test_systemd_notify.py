"""The notify protocol as systemd sees it, through a real NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agentbox.notify import Notifier, ascii_line, watchdog_loop
from tests.conftest import NO_MQTT, NotifyListener, wait_for
from tests.units import verified


def test_ready_watchdog_stopping_and_clean_exit(daemons: Any, short_tmp: Path) -> None:
    listener = NotifyListener(short_tmp / "notify.sock")
    d = daemons(NO_MQTT, env={"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "2000000"})
    started = time.monotonic()
    d.start(wait=False)
    ready_at = listener.wait_for("READY=1")
    assert ready_at - started < 10
    ready_msg = next(m for _, m in listener.messages if "READY=1" in m)
    assert "STATUS=ready" in ready_msg
    assert f"MAINPID={d.proc.pid}" in ready_msg

    listener.poll(4.5)
    pings = listener.times("WATCHDOG=1")
    assert len(pings) >= 3, listener.messages
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert all(0.6 < g < 1.6 for g in gaps), gaps  # about half of WATCHDOG_USEC

    d.proc.send_signal(signal.SIGHUP)
    listener.wait_for("RELOADING=1")
    reloading_at = listener.times("RELOADING=1")[0]
    listener.poll(1.0)
    assert any(t > reloading_at for t in listener.times("READY=1")), "no READY=1 after reload"

    d.proc.send_signal(signal.SIGTERM)
    listener.wait_for("STOPPING=1")
    assert d.proc.wait(30) == 0
    log = d.log()
    assert "Traceback" not in log
    assert "stopped cleanly" in log
    listener.close()


def test_sigterm_without_notify_socket_also_exits_zero(daemons: Any) -> None:
    d = daemons(NO_MQTT).start()
    assert d.stop() == 0


async def test_blocked_event_loop_stops_the_pings(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = NotifyListener(short_tmp / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))

    async def healthy() -> None:
        return None

    task = asyncio.create_task(watchdog_loop(Notifier(), healthy))
    await asyncio.sleep(1.0)
    time.sleep(1.5)  # block the event loop, as a stuck handler would
    blocked_until = time.monotonic()
    await asyncio.sleep(0.6)
    task.cancel()
    listener.poll(0.3)
    pings = listener.times("WATCHDOG=1")
    before = [p for p in pings if p < blocked_until - 1.5]
    assert len(before) >= 3, pings
    # The datagrams queued before the block arrive at once; none may be sent during it.
    sent_gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(sent_gaps) >= 1.2, f"pings kept coming while the loop was blocked: {sent_gaps}"
    listener.close()


async def test_failing_health_check_withholds_pings(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = NotifyListener(short_tmp / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    async def stuck() -> None:
        await asyncio.sleep(10)  # a store thread that no longer answers

    task = asyncio.create_task(watchdog_loop(Notifier(), stuck))
    await asyncio.sleep(0.8)
    task.cancel()
    listener.poll(0.3)
    assert listener.times("WATCHDOG=1") == []
    listener.close()


def test_watchdog_for_another_pid_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert Notifier().watchdog_s is None


def test_status_text_is_one_ascii_line() -> None:
    assert ascii_line("queue: 3 \u2192 running\nnext") == "queue: 3 ? running next"


def test_console_unit_verifies_and_replaces_the_login_prompt(short_tmp: Path) -> None:
    unit = Path(__file__).resolve().parent.parent / "systemd" / "agentbox-console.service"
    text = unit.read_text()
    verified(unit, short_tmp)
    for needed in (
        "Conflicts=getty@tty1.service",
        "TTYPath=/dev/tty1",
        "StandardInput=tty-force",
        "Restart=always",
    ):
        assert needed in text, needed


def test_unit_file_verifies_and_scores_at_most_2(short_tmp: Path) -> None:
    unit = Path(__file__).resolve().parent.parent / "systemd" / "agentbox.service"
    copy = verified(unit, short_tmp)
    sec = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    line = next(x for x in sec.stdout.splitlines() if "Overall exposure level" in x)
    score = float(line.split(":")[1].split()[0])
    assert score <= 2.0, line
    text = unit.read_text()
    for needed in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "RestartPreventExitStatus=78",
        "StateDirectory=agentbox",
        "UMask=0077",
        "CapabilityBoundingSet=\n",
    ):
        assert needed in text, needed


def test_reload_applies_new_config_refuses_bad_and_keeps_tasks(daemons: Any) -> None:
    d = daemons(NO_MQTT + "[device]\nname = 'before'\n").start()
    d.cli(
        "submit",
        "--id",
        "kept",
        "--tier",
        "local",
        "--max-tokens",
        "300",
        "Count from 1 to 1000, separated by commas.",
    )
    d.config_path.write_text(NO_MQTT + "[device]\nname = 'after'\n")
    assert d.cli("reload").stdout.strip() == "reloaded"
    assert d.json("status")["name"] == "after"

    d.config_path.write_text(NO_MQTT + "[device]\nname = 'after'\ncolour = 'red'\n")
    bad = d.cli("reload", check=False)
    assert bad.returncode == 78 and "device.colour: unknown key" in bad.stdout
    assert d.json("status")["name"] == "after"
    assert "reload refused, keeping the running configuration" in d.log()

    final = {"succeeded", "failed", "expired", "cancelled"}
    # Generous: 300 local tokens take seconds alone, minutes on a machine busy with a VM.
    task = wait_for(lambda: (t := d.task("kept"))["state"] in final and t, 600, interval=0.3)
    assert task["state"] == "succeeded" and task["attempts"] == 1
    assert d.stop() == 0


def test_journald_lines_carry_priorities(daemons: Any) -> None:
    d = daemons(
        "[mqtt]\nenabled = false\n[routing]\nmode = 'cost'\n", env={"JOURNAL_STREAM": "8:12345"}
    ).start()
    d.config_path.write_text("[mqtt]\nenabled = false\nbogus = 1\n")
    d.cli("reload", check=False)
    assert d.stop() == 0
    lines = d.log().splitlines()
    assert lines and all(line[:3] in ("<6>", "<4>", "<3>") for line in lines), lines
    assert any(line.startswith("<3>agentbox.daemon: reload refused") for line in lines)
    assert any(line.startswith("<6>agentbox.daemon: stopped cleanly") for line in lines)
