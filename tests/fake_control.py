"""A fake daemon for console snapshots: a real unix socket answering with canned replies."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from agentbox.routing.scoreboard import Call, Scoreboard


def _scoreboard() -> dict[str, Any]:
    """A busy hour on two providers, built by the real scoreboard (so its shape is real)."""
    board = Scoreboard()
    for i in range(40):
        failure = "rate" if i % 10 == 3 else "server" if i == 17 else None
        call = Call("openai", "gpt-4o-mini", 0.9 + i % 7 * 0.2, 0.35 + i % 5 * 0.05, failure)
        call.input_tokens, call.output_tokens, call.cost_usd = 820, 210, 0.000249
        board.record(call, f"o{i}")
        board.task_ended(f"o{i}", True)
    for i in range(6):
        call = Call("local", "SmolLM2-135M-Instruct.Q4_1", 2.4 + i * 0.3, 0.2, None, 90, 64)
        board.record(call, f"l{i}")
        board.task_ended(f"l{i}", True)
    return board.summary()


STATUS: dict[str, Any] = {
    "version": "0.1.0",
    "device_id": "a1b2c3d4e5f60718",
    "name": "kitchen-box",
    "pid": 1234,
    "uptime_s": 3725,
    "rss_mb": 44.6,
    "state_dir": "/var/lib/agentbox",
    "config": None,
    "accepting": True,
    "queue": {"cloud": {"queued": 2, "running": 1}},
    "accepted": 40,
    "finished": 37,
    "local": {
        "loaded": True,
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "tokens_per_s": 61.2,
        "threads": 2,
        "restarts": 0,
    },
    "providers": {
        "openai": {
            "kind": "openai",
            "model": "gpt-4o-mini",
            "key": "store",
            "state": "ok",
            "retry_in_s": 0,
            "last_error": "",
        },
        "claude": {
            "kind": "anthropic",
            "model": "claude-haiku-4-5",
            "key": None,
            "state": "auth_failed",
            "retry_in_s": 0,
            "last_error": "key rejected",
        },
    },
    "spend": {
        "today_usd": 0.4312,
        "month_usd": 7.25,
        "reserved_usd": 0.0,
        "daily_cap_usd": 2.0,
        "monthly_cap_usd": 30.0,
    },
    "scoreboard": _scoreboard(),
    "mqtt": {
        "enabled": True,
        "connected": True,
        "session": 3,
        "broker": "localhost:1883",
        "received": 40,
        "rejected": 0,
    },
    "network": [{"name": "eth0", "addresses": ["192.168.1.20", "fe80::1"]}],
    "errors": [  # ts: seconds before now, see _aged
        {"ts": -3000.0, "level": "warning", "message": "task t-17: escalation failed"},
        {
            "ts": -240.0,
            "level": "error",
            "message": "claude: key rejected (HTTP 401): invalid x-api-key",
        },
    ],
}
# A new box: one provider, no key anywhere; the console starts its setup.
FRESH = {
    **STATUS,
    "providers": {"openai": {**STATUS["providers"]["openai"], "key": None}},
    "errors": [],
}
KEYS = {
    "providers": [
        {
            "name": "openai",
            "kind": "openai",
            "model": "gpt-4o-mini",
            "key": "store",
            "last4": "9f3a",
            "state": "ok",
        },
        {
            "name": "claude",
            "kind": "anthropic",
            "model": "claude-haiku-4-5",
            "key": None,
            "last4": None,
            "state": "auth_failed",
        },
    ],
    "addable": ["gemini"],
}


SETTINGS = {
    "settings": {
        "budget": {"daily_usd": 3.5, "monthly_usd": 40.0, "per_task_usd": 0.25},
        "routing": {"mode": "cost", "offline": "local"},
    }
}

NETWORK = {
    "interfaces": [{"name": "eth0", "addresses": ["192.168.1.20", "fe80::1"]}],
    "internet": {
        "ok": False,
        "target": "api.openai.com:443",
        "message": "name lookup of api.openai.com failed",
        "hint": "no working DNS: check the router (DHCP) or its DNS server",
    },
}
BROKER = {
    "mqtt": {
        "enabled": True,
        "host": "mqtt.lan",
        "port": 8883,
        "tls": True,
        "username": "kitchen-box",
        "ca_file": "/etc/agentbox/ca.crt",
        "cert_file": "",
        "key_file": "",
    },
    "password_set": True,
    "connected": True,
    "error": "",
}
TASKS = {
    "tasks": [
        {
            "id": "nightly-digest-0042",
            "state": "succeeded",
            "created_at": -120.0,  # seconds before now: see _aged
            "route": {
                "tier": "cloud",
                "provider": "openai",
                "model": "gpt-4o-mini",
                "reason": "long input",
            },
            "usage": {"input_tokens": 5120, "output_tokens": 380, "cost_usd": 0.0010},
            "output": "Three items need attention today.",
            "error": None,
        },
        {
            "id": "sort-mail-17",
            "state": "failed",
            "created_at": -7200.0,
            "route": {
                "tier": "local",
                "provider": "local",
                "model": "SmolLM2-135M",
                "reason": "short classification",
            },
            "usage": {"input_tokens": 48, "output_tokens": 0, "cost_usd": 0.0},
            "output": None,
            "error": {"code": "deadline", "message": "deadline passed"},
        },
    ]
}


def _aged(items: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    """Times relative to now, so the snapshot's ages never drift."""
    now = time.time()
    return [{**item, field: now + item[field]} for item in items]


class FakeControl:
    def __init__(self, path: Path, fresh: bool = False) -> None:
        self.path = path
        self.status = FRESH if fresh else STATUS
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as f:
                for line in f:
                    op = json.loads(line)["op"]
                    replies: dict[str, dict[str, Any]] = {
                        "status": {
                            "status": {
                                **self.status,
                                "errors": _aged(self.status["errors"], "ts"),
                            }
                        },
                        "keys": KEYS,
                        "settings": SETTINGS,
                        "network": NETWORK,
                        "broker": BROKER,
                        "list": {"tasks": _aged(TASKS["tasks"], "created_at")},
                    }
                    reply = replies.get(op, {})
                    f.write(json.dumps({"type": "reply", **reply}).encode() + b"\n")
                    f.flush()

    def close(self) -> None:
        self.sock.close()
