"""`agentbox fleet`: two real boxes on a real Mosquitto, read back from MQTT only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, free_port, wait_for
from tests.mqtt_peer import Broker


def fleet(tmp: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    conf = tmp / "fleet.toml"
    conf.write_text(f"[mqtt]\nhost = '127.0.0.1'\nport = {port}\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AGENTBOX_")},
        "AGENTBOX_CONFIG": str(conf),
        "AGENTBOX_STATE_DIR": str(tmp / "fleet-state"),
    }
    return subprocess.run(
        [sys.executable, "-m", "agentbox", "fleet", "--once", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_fleet_shows_each_box_and_notices_one_dying(daemons: Any, short_tmp: Path) -> None:
    broker = Broker(short_tmp).start()
    try:
        boxes = {}
        for name in ("box1", "box2"):
            config = (
                f"[device]\nid = '{name}'\nname = 'kitchen-{name}'\n"
                f"[mqtt]\nhost = '127.0.0.1'\nport = {broker.port}\nhealth_interval_s = 5\n"
            )
            boxes[name] = daemons(config, name=name).start()
        for d in boxes.values():
            wait_for(lambda d=d: d.json("status")["mqtt"]["connected"], 20, what="connected")

        # Status and info are retained; health comes every 5 s: listen a little longer.
        done = fleet(short_tmp, broker.port, "--json", "--wait", "6")
        assert done.returncode == 0, done.stderr
        views = {v["device_id"]: v for v in json.loads(done.stdout)}
        assert set(views) == {"box1", "box2"}
        for name, v in views.items():
            assert v["state"] == "online" and v["name"] == f"kitchen-{name}"
            assert v["version"] and v["cpu_percent"] is not None and v["queued"] == 0
            assert v["daily_cap_usd"] == 2.0 and v["health_age_s"] is not None

        boxes["box2"].kill9()  # the broker publishes its will at once
        done = fleet(short_tmp, broker.port, "--wait", "1")
        lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
        assert "online" in lines["box1"] and "kitchen-box1" in lines["box1"]
        assert "offline" in lines["box2"]
        assert boxes["box1"].stop() == 0
        done = fleet(short_tmp, broker.port, "--json", "--wait", "1")
        assert {v["device_id"]: v["state"] for v in json.loads(done.stdout)} == {
            "box1": "stopped",
            "box2": "offline",
        }
    finally:
        broker.stop()


def test_fleet_says_when_the_broker_cannot_be_reached(short_tmp: Path) -> None:
    done = fleet(short_tmp, free_port(), "--wait", "1")
    assert done.returncode == 69
    assert "nothing accepts MQTT at 127.0.0.1:" in done.stderr and "Traceback" not in done.stderr
