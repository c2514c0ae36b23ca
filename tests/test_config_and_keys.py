"""Configuration sources and errors, the key store's file modes, and keys never shown."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agentbox import config, keys, logs, netcheck
from agentbox.settings import Settings
from tests.conftest import NO_MQTT, ROOT, dead_provider

SECRET = "sk-test-0123456789abcdefSECRET"


def _agentbox(
    env: dict[str, str], *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENTBOX_")}
    return subprocess.run(
        [sys.executable, "-m", "agentbox", *args],
        env={**clean, **env},
        input=input,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def _load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, toml: str, **env: str) -> config.Loaded:
    path = tmp_path / "agentbox.toml"
    path.write_text(toml)
    for key in [k for k in os.environ if k.startswith("AGENTBOX_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AGENTBOX_CONFIG", str(path))
    monkeypatch.setenv("AGENTBOX_STATE_DIR", str(tmp_path / "state"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return config.load()


def test_defaults_file_and_env_in_priority_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    loaded = _load(
        monkeypatch,
        tmp_path,
        "[mqtt]\nport = 1884\nhost = 'broker.lan'\n[budget]\ndaily_usd = 5\n"
        "[providers.groq]\nkind = 'openai'\nmodel = 'llama'\n"
        "[providers.claude]\nkind = 'anthropic'\nmodel = 'claude-haiku-4-5'\n"
        "[routing]\ncloud_order = ['claude']\n",
        AGENTBOX_MQTT__PORT="1885",
    )
    s = loaded.settings
    assert s.mqtt.port == 1885  # env beats file
    assert s.mqtt.host == "broker.lan"  # file beats default
    assert s.budget.daily_usd == 5 and s.budget.monthly_usd == 30.0
    assert s.cloud_order() == ["claude", "groq"]
    assert loaded.state_dir == tmp_path / "state"
    assert len(loaded.device_id) == 16


@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        ("[mqtt]\nprot = 1\n", {}, "agentbox.toml: mqtt.prot: unknown key"),
        ("[mqtt]\nport = 'abc'\n", {}, "agentbox.toml: mqtt.port: Input should be a valid integer"),
        (
            "[mqtt]\nport = 99999\n",
            {},
            "agentbox.toml: mqtt.port: Input should be less than or equal",
        ),
        ("[routing]\nmode = 'fast'\n", {}, "agentbox.toml: routing.mode: Input should be"),
        ("", {"AGENTBOX_BUDGET__DAILY_USD": "-1"}, "environment AGENTBOX_BUDGET__DAILY_USD"),
        ("[mqtt\n", {}, "agentbox.toml: not valid TOML"),
        ("[routing]\ncloud_order = ['nope']\n", {}, "cloud_order names 'nope'"),
    ],
)
def test_bad_config_names_key_and_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, toml: str, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(config.ConfigError) as err:
        _load(monkeypatch, tmp_path, toml, **env)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_config_exits_78_with_one_line_and_no_traceback(short_tmp: Path) -> None:
    cfg = short_tmp / "bad.toml"
    cfg.write_text("[mqtt]\nport = 'abc'\n")
    env = {"AGENTBOX_CONFIG": str(cfg), "AGENTBOX_STATE_DIR": str(short_tmp / "s")}
    for args in (("config", "check"), ("run",)):
        proc = _agentbox(env, *args)
        assert proc.returncode == 78, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "mqtt.port" in lines[0] and str(cfg) in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    ok = short_tmp / "ok.toml"
    ok.write_text(NO_MQTT)
    proc = _agentbox({**env, "AGENTBOX_CONFIG": str(ok)}, "config", "check")
    assert proc.returncode == 0 and "configuration ok" in proc.stdout


@pytest.mark.parametrize("kind", ["file in the way", "parent is a file"])
def test_unusable_state_dir_exits_78(short_tmp: Path, kind: str) -> None:
    blocker = short_tmp / "blocker"
    blocker.write_text("")
    state = blocker if kind == "file in the way" else blocker / "state"
    cfg = short_tmp / "c.toml"
    cfg.write_text(NO_MQTT)
    proc = _agentbox({"AGENTBOX_CONFIG": str(cfg), "AGENTBOX_STATE_DIR": str(state)}, "run")
    assert proc.returncode == 78
    assert "Traceback" not in proc.stderr
    assert "state director" in proc.stderr and str(state) in proc.stderr


def test_usage_error_exits_2() -> None:
    assert _agentbox({}, "submit", "--tier", "gpu", "x").returncode == 2
    assert _agentbox({}, "frobnicate").returncode == 2


def test_key_store_modes_and_atomic_replace(tmp_path: Path) -> None:
    store = keys.KeyStore(tmp_path / "state")
    old = os.umask(0o022)  # a permissive umask must not make the key readable
    try:
        store.set("openai", SECRET + "\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path("openai").stat().st_mode) == 0o600
    assert store.get("openai") == SECRET
    store.set("openai", "sk-second-key-000000000")
    assert store.get("openai") == "sk-second-key-000000000"
    assert [p.name for p in store.dir.iterdir()] == ["openai"]  # no temp or backup copies
    assert store.loose_modes() == []
    for bad in ("", "   ", "two words", "x" * 9000):
        with pytest.raises(keys.KeyStoreError) as err:
            store.set("openai", bad)
        assert bad.strip() == "" or bad not in str(err.value)
    with pytest.raises(keys.KeyStoreError):
        store.set("../evil", SECRET)


def test_key_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = keys.KeyStore(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "from-env-xxxxxxxxxxxx")
    assert keys.resolve(store, "myopenai", "openai") == (
        "from-env-xxxxxxxxxxxx",
        "env:OPENAI_API_KEY",
    )
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "myopenai").write_text("from-credentials-xxxx\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert keys.resolve(store, "myopenai", "openai") == ("from-credentials-xxxx", "credentials")
    store.set("myopenai", "from-store-xxxxxxxxxx")
    assert keys.resolve(store, "myopenai", "openai") == ("from-store-xxxxxxxxxx", "store")


def test_key_never_shown_by_cli_logs_or_tasks(daemons: Any) -> None:
    d = daemons(NO_MQTT + "[tasks]\nmax_attempts = 1\n" + dead_provider("openai"))
    out = d.cli("keys", "set", "openai", input=SECRET + "\n")
    assert SECRET not in out.stdout + out.stderr
    assert SECRET[-4:] in out.stdout
    key_file = d.state_dir / "secrets" / "openai"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    listing = d.cli("keys", "list").stdout + d.cli("keys", "list", "--json").stdout
    assert "openai" in listing and SECRET not in listing
    shown = d.cli("config", "show").stdout + d.cli("config", "show", "--json").stdout
    assert SECRET not in shown

    d.start()
    proc = d.cli("submit", "--wait", "--json", "--tier", "cloud", "Hello", check=False)
    assert proc.returncode == 1  # nothing listens at the provider: the task fails
    task = json.loads(proc.stdout)
    assert task["state"] == "failed" and task["error"]["code"] == "provider_unavailable"
    assert SECRET not in str(task) + d.cli("tasks", "get", task["id"]).stdout
    assert d.stop() == 0
    assert SECRET not in d.log()
    # Whoever starts the daemon, what it writes is owner-only.
    for path in d.state_dir.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {mode:o}"


def test_scrubber_masks_secrets_in_any_log_record() -> None:
    scrubber = logs.Scrubber()
    scrubber.set_secrets({SECRET})
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "provider said %s", (f"bad key {SECRET}",), None
    )
    assert scrubber.filter(record)
    assert SECRET not in record.getMessage() and "***" in record.getMessage()


def test_console_overlay_sits_between_file_and_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _load(monkeypatch, tmp_path, "[budget]\ndaily_usd = 4\nmonthly_usd = 50\n")
    (tmp_path / "state").mkdir()
    loaded = config.save_overlay({"budget": {"daily_usd": "7.5"}})
    assert loaded.settings.budget.daily_usd == 7.5 and loaded.settings.budget.monthly_usd == 50
    overlay = tmp_path / "state" / "settings.toml"
    assert stat.S_IMODE(overlay.stat().st_mode) == 0o600
    assert "daily_usd = 7.5" in overlay.read_text()
    assert config.load().settings.budget.daily_usd == 7.5
    monkeypatch.setenv("AGENTBOX_BUDGET__DAILY_USD", "9")
    assert config.load().settings.budget.daily_usd == 9
    with pytest.raises(config.ConfigError, match="cannot be changed from the console"):
        config.save_overlay({"mqtt": {"prefix": "elsewhere"}})
    with pytest.raises(config.ConfigError) as err:
        config.save_overlay({"budget": {"monthly_usd": -3}})
    assert "settings.toml: budget.monthly_usd" in str(err.value)
    assert "monthly_usd" not in overlay.read_text()  # nothing written on a refusal
    monkeypatch.delenv("AGENTBOX_BUDGET__DAILY_USD")  # else the environment hides the bad value
    overlay.write_text("[budget]\ndaily_usd = 'lots'\n")
    # A damaged console file no longer stops the box: its last good copy stands in, loudly.
    loaded = config.load()
    assert loaded.settings.budget.daily_usd == 7.5
    [warning] = loaded.warnings
    assert "settings.toml: budget.daily_usd" in warning and "last good copy" in warning


def test_the_internet_check_probes_the_first_cloud_host_unless_told() -> None:
    def target(**conf: Any) -> str:
        return netcheck.target(Settings(**conf))

    assert target() == "api.openai.com:443"
    local = {"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:8080/v1"}
    assert target(providers={"lan": local}) == "127.0.0.1:8080"
    cloud = {"kind": "gemini", "model": "m"}  # no base_url: the kind's own API host
    assert target(providers={"g": cloud, "lan": local}) == "generativelanguage.googleapis.com:443"
    told = {"reach_check": "192.0.2.1:443"}
    assert target(device=told, providers={"lan": local}) == "192.0.2.1:443"
    with pytest.raises(ValidationError):
        Settings(device={"reach_check": "no-port"})  # type: ignore[arg-type]
