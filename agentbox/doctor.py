"""`agentbox doctor`: each check says what it found and, when it fails, what to do."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any

from agentbox import keys
from agentbox.config import Loaded
from agentbox.control_client import ControlClient, ControlError, socket_path
from agentbox.providers.base import ProviderError
from agentbox.providers.local import resolve_model
from agentbox.providers.prices import PriceTable
from agentbox.settings import ProviderConfig

MIN_FREE_MB = 500


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_state_dir(loaded: Loaded) -> Check:
    path = loaded.state_dir
    if not path.exists():
        return Check(
            "state dir", False, f"{path} does not exist", "start the daemon once to create it"
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check("state dir", False, f"{path} is mode {mode:o}", f"chmod 700 {path}")
    if not os.access(path, os.W_OK):
        return Check("state dir", False, f"{path} is not writable", "fix its owner")
    return Check("state dir", True, f"{path} (mode {mode:o})")


def check_keys(loaded: Loaded) -> list[Check]:
    store = keys.KeyStore(loaded.state_dir)
    out = []
    problems = store.loose_modes()
    if not store.dir.exists():
        out.append(Check("key store modes", True, f"no keys stored yet ({store.dir})"))
    else:
        detail = "; ".join(problems) or f"{store.dir} owner-only"
        hint = "chmod 700 the directory and 600 each file" if problems else ""
        out.append(Check("key store modes", not problems, detail, hint))
    for name, prov in loaded.settings.providers.items():
        if prov.auth == "none":
            out.append(check_keyless(name, prov))
            continue
        info = keys.describe(store, name, prov.kind)
        hint = f"agentbox keys set {name}"
        if prov.kind == "openai":
            hint += f", or auth = 'none' in [providers.{name}] for a server that takes no key"
        out.append(
            Check(
                f"key {name}",
                bool(info.source),
                info.source or "no key",
                "" if info.source else hint,
            )
        )
    return out


def check_keyless(name: str, conf: ProviderConfig) -> Check:
    """A provider that takes no key passes when its server answers the model listing."""
    import asyncio  # noqa: PLC0415

    from agentbox.routing.pool import test_key  # noqa: PLC0415 (loads the providers)

    ok, message = asyncio.run(test_key(name, conf, None))
    return Check(
        f"server {name}",
        ok,
        f"takes no key (auth = 'none'): {message}",
        "" if ok else f"start the server or fix providers.{name}.base_url",
    )


def check_prices(loaded: Loaded) -> list[Check]:
    """Loud when a keyless provider would be billed at the dearest price."""
    settings = loaded.settings
    return [
        Check("pricing", False, w, "phantom spend would fill the daily cap")
        for w in PriceTable(settings.prices, settings.providers).warnings()
    ]


def check_disk(loaded: Loaded) -> Check:
    target = loaded.state_dir if loaded.state_dir.exists() else loaded.state_dir.parent
    free = shutil.disk_usage(target).free // (1024 * 1024)
    return Check(
        "disk space",
        free >= MIN_FREE_MB,
        f"{free} MB free at {target}",
        "" if free >= MIN_FREE_MB else "free some space: tasks and logs need room",
    )


def check_broker(loaded: Loaded) -> Check:
    mqtt = loaded.settings.mqtt
    if not mqtt.enabled:
        return Check("mqtt broker", True, "disabled (mqtt.enabled = false)")
    try:
        with socket.create_connection((mqtt.host, mqtt.port), timeout=3):
            pass
    except OSError as exc:
        return Check(
            "mqtt broker",
            False,
            f"{mqtt.host}:{mqtt.port} unreachable ({exc.strerror or exc})",
            "start the broker or fix mqtt.host / mqtt.port",
        )
    return Check("mqtt broker", True, f"{mqtt.host}:{mqtt.port} accepts connections")


def check_daemon(loaded: Loaded) -> list[Check]:
    """The daemon itself, and what it knows of each provider (auth failures, quotas)."""
    try:
        with ControlClient(socket_path(loaded.state_dir), timeout=5) as client:
            status = client.call("status")["status"]
    except ControlError as exc:
        hint = (
            "start it: ./scripts/run or systemctl start agentbox"
            if exc.code == "unreachable"
            else "it runs but did not answer: journalctl -u agentbox -e shows why"
        )
        return [Check("daemon", False, exc.message, hint)]
    out = [Check("daemon", True, f"running, pid {status['pid']}, up {status['uptime_s']} s")]
    for part, reason in (status.get("unavailable") or {}).items():
        out.append(Check(f"daemon report: {part}", False, reason, "journalctl -u agentbox -e"))
    hints = {
        "auth_failed": "the key was rejected (or the server wants one):"
        " agentbox keys set {name}, then agentbox reload",
        "quota_exhausted": "the provider's quota or spend limit is used up; it is retried later",
    }
    for name, p in (status.get("providers") or {}).items():
        ok = p["state"] in ("ok", "cooldown")
        detail = p["state"] + (f": {p['last_error']}" if p.get("last_error") else "")
        out.append(
            Check(f"provider {name}", ok, detail, hints.get(p["state"], "").format(name=name))
        )
    return out


def check_local_model(loaded: Loaded) -> Check:
    local = loaded.settings.local
    if not local.enabled:
        return Check("local model", True, "disabled (local.enabled = false)")
    try:
        path = resolve_model(local.model_path)
    except ProviderError as exc:
        return Check("local model", False, exc.message)
    # Load it in a throwaway worker, the same code path the daemon uses.
    probe = (
        "import sys; from llama_cpp import Llama; "
        "Llama(model_path=sys.argv[1], n_ctx=256, verbose=False); print('ok')"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", probe, str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Check("local model", False, f"{path.name} did not load in 120 s")
    if proc.returncode != 0 or "ok" not in proc.stdout:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        return Check(
            "local model",
            False,
            f"{path.name} failed to load: {last}",
            "reinstall llama-cpp-python or set local.model_path",
        )
    return Check("local model", True, f"{path.name} loads")


def run_checks(loaded: Loaded, config_detail: str) -> list[Check]:
    return [
        Check("config", True, config_detail),
        check_state_dir(loaded),
        *check_keys(loaded),
        *check_prices(loaded),
        check_disk(loaded),
        *check_daemon(loaded),
        check_broker(loaded),
        check_local_model(loaded),
    ]
