"""Every bad configuration ends in exit 78 and one line naming its real source, never a
traceback; a damaged console settings file falls back to its last good copy instead."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentbox import config
from agentbox.config import ConfigError
from tests.conftest import NO_MQTT, ROOT, Daemon

BAD_UTF8 = b'[device]\nname = "caf\xe9"\n'  # Latin-1, as an old editor saves it


def agentbox(
    args: list[str], state: Path, conf: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTBOX_", "NOTIFY_"))}
    return subprocess.run(
        [sys.executable, "-m", "agentbox", *args],
        env={**base, "AGENTBOX_STATE_DIR": str(state), "AGENTBOX_CONFIG": str(conf), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


CASES: dict[str, tuple[bytes, dict[str, str], str]] = {
    # name: (agentbox.toml, environment, what the one line must say)
    "file not UTF-8": (BAD_UTF8, {}, "not UTF-8 text (byte 20 is 0xe9)"),
    "list not JSON": (
        NO_MQTT.encode(),
        {"AGENTBOX_AGENT__FETCH_ALLOW": "example.com"},
        "environment AGENTBOX_AGENT__FETCH_ALLOW: not valid JSON",
    ),
    "table not JSON": (
        NO_MQTT.encode(),
        {"AGENTBOX_PROVIDERS": "{bad"},
        "environment AGENTBOX_PROVIDERS: not valid JSON",
    ),
    "env beats file": (
        b"[agent]\nmax_steps = 3\n",
        {"AGENTBOX_AGENT__MAX_STEPS": "0"},
        "environment AGENTBOX_AGENT__MAX_STEPS: Input should be greater than or equal to 1",
    ),
    "infinite cap": (b"[budget]\ndaily_usd = inf\n", {}, "budget.daily_usd: Input should be"),
    # [update] takes a later release's keys, but not a known one misspelt
    "update typo": (b"[update]\nprobaton_s = 30\n", {}, "update.probaton_s: unknown key"),
    "later key elsewhere": (b"[mqtt]\nmax_download_mb = 5\n", {}, "mqtt.max_download_mb: unknown"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", [["config", "check"], ["run"]])
def test_bad_configuration_exits_78_with_one_line(
    short_tmp: Path, case: str, command: list[str]
) -> None:
    text, env, said = CASES[case]
    conf = short_tmp / "agentbox.toml"
    conf.write_bytes(text)
    proc = agentbox(command, short_tmp / "state", conf, **env)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 78, proc.stderr
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert said in lines[0], lines[0]


def test_a_later_releases_update_setting_is_a_warning_not_an_error(short_tmp: Path) -> None:
    """A rollback target must start with the settings a newer release added to [update]."""
    conf = short_tmp / "agentbox.toml"
    conf.write_text(NO_MQTT + "[update]\nprobation_s = 30\nmax_download_mb = 500\n")
    proc = agentbox(["config", "check"], short_tmp / "state", conf)
    assert proc.returncode == 0, proc.stderr
    assert "update.max_download_mb: not a setting of this release; ignored" in proc.stderr
    shown = agentbox(["config", "show", "--json"], short_tmp / "state", conf)
    assert '"probation_s": 30.0' in shown.stdout and "max_download_mb" not in shown.stdout


def test_a_damaged_console_file_falls_back_to_its_last_good_copy(
    daemons: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    d: Daemon = daemons(NO_MQTT)
    monkeypatch.setenv("AGENTBOX_STATE_DIR", str(d.state_dir))
    monkeypatch.setenv("AGENTBOX_CONFIG", str(d.config_path))
    d.state_dir.mkdir(mode=0o700)
    config.save_overlay({"budget": {"daily_usd": 1.5}})
    overlay = d.state_dir / "settings.toml"
    good = d.state_dir / "settings.toml.good"
    assert good.read_text() == overlay.read_text() and good.stat().st_mode & 0o777 == 0o600
    overlay.write_bytes(b"[budget]\ndaily_usd = 1.\xff\n")  # a torn write, a bad sector
    d.start()
    status = d.json("status")
    assert status["spend"]["daily_cap_usd"] == 1.5  # the good copy's value
    [warning] = status["config_warnings"]
    assert "settings.toml: not UTF-8 text" in warning and "last good copy" in warning
    assert "configuration: " in d.log() and "settings.toml: not UTF-8 text" in d.log()
    assert "warning: " in d.cli("status").stdout
    check = d.cli("config", "check")
    assert check.returncode == 0 and "last good copy" in check.stderr
    # The console can save again: its change replaces the damaged file.
    config.save_overlay({"budget": {"monthly_usd": 20.0}})
    assert config.load().warnings == []
    assert config.load().settings.budget.daily_usd == 1.5
    assert d.stop() == 0


def test_without_a_good_copy_the_console_file_is_ignored_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTBOX_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("AGENTBOX_CONFIG", raising=False)
    (tmp_path / "settings.toml").write_text("[budget]\ndaily_usd = -1\n")
    conf = tmp_path / "agentbox.toml"
    conf.write_text("[budget]\nmonthly_usd = 9.0\n")
    loaded = config.load(str(conf))
    assert loaded.settings.budget.monthly_usd == 9.0 and loaded.settings.budget.daily_usd == 2.0
    [warning] = loaded.warnings
    assert "budget.daily_usd" in warning and "ignoring the console's settings" in warning
    # The file itself still stops the box: falling back cannot mend it.
    conf.write_text("[budget]\nmonthly_usd = -9.0\n")
    with pytest.raises(ConfigError, match=r"agentbox.toml: budget.monthly_usd"):
        config.load(str(conf))


def test_a_store_from_a_newer_release_exits_78_with_what_to_do(short_tmp: Path) -> None:
    """After a rollback past a migration the old release cannot read: exit 78, no traceback."""
    state = short_tmp / "state"
    state.mkdir()
    conn = sqlite3.connect(state / "agentbox.db")
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    conf = short_tmp / "agentbox.toml"
    conf.write_text(NO_MQTT)
    proc = agentbox(["run"], state, conf)
    assert proc.returncode == 78, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "newer than this agentbox" in proc.stderr and "docs/updates.md" in proc.stderr
