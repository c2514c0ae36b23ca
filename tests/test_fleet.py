"""`agentbox fleet`: real boxes on a real Mosquitto, read back from MQTT only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, free_port, wait_for
from tests.mqtt_peer import Broker, Peer


def fleet(tmp: Path, port: int, *args: str, extra: str = "") -> subprocess.CompletedProcess[str]:
    conf = tmp / "fleet.toml"
    conf.write_text(f"[mqtt]\nhost = '127.0.0.1'\nport = {port}\n{extra}")
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


def boxes_on(broker: Broker, daemons: Any, names: list[str], extra: str = "") -> dict[str, Any]:
    started = {}
    for name in names:
        config = (
            f"[device]\nid = '{name}'\nname = 'kitchen-{name}'\n"
            f"[mqtt]\nhost = '127.0.0.1'\nport = {broker.port}\nhealth_interval_s = 5\n{extra}"
        )
        started[name] = daemons(config, name=name).start()
    for d in started.values():
        wait_for(lambda d=d: d.json("status")["mqtt"]["connected"], 20, what="connected")
    return started


def test_three_boxes_online_then_one_killed_then_one_stopped(daemons: Any, short_tmp: Path) -> None:
    broker = Broker(short_tmp).start()
    try:
        boxes = boxes_on(broker, daemons, ["box1", "box2", "box3"])
        # Status and info are retained; health comes every 5 s: listen a little longer.
        done = fleet(short_tmp, broker.port, "--json", "--wait", "6")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        views = {v["device_id"]: v for v in doc["boxes"]}
        assert set(views) == {"box1", "box2", "box3"}
        for name, v in views.items():
            assert v["state"] == "online" and v["name"] == f"kitchen-{name}"
            assert v["version"] and v["cpu_percent"] is not None and v["queued"] == 0
            assert v["daily_cap_usd"] == 2.0 and v["health_age_s"] is not None
            assert v["health_interval_s"] == 5 and v["failed_1h"] == 0 and v["alerts"] == []
        assert doc["alerts"] == [] and doc["counts"]["states"] == {"online": 3}

        boxes["box2"].kill9()  # the broker publishes its will at once
        done = fleet(short_tmp, broker.port, "--wait", "1")
        assert done.returncode == 1, done.stderr
        lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:4]}
        assert "online" in lines["box1"] and "kitchen-box1" in lines["box1"]
        assert "offline" in lines["box2"] and lines["box2"].endswith("offline")
        assert "critical box2: offline: offline: the broker published its will" in done.stdout

        assert boxes["box1"].stop() == 0
        done = fleet(short_tmp, broker.port, "--json", "--wait", "1", "--fail-on", "critical")
        doc = json.loads(done.stdout)
        assert {v["device_id"]: v["state"] for v in doc["boxes"]} == {
            "box1": "stopped",
            "box2": "offline",
            "box3": "online",
        }
        assert [(a["device_id"], a["code"]) for a in doc["alerts"]] == [("box2", "offline")]
        assert done.returncode == 1

        # A stop counts once it has lasted [fleet] stopped_after_s; a warning fails only
        # when asked to.
        settings = "[fleet]\nstopped_after_s = 0\n"
        done = fleet(short_tmp, broker.port, "--json", "--wait", "1", extra=settings)
        alerts = {
            a["device_id"]: (a["code"], a["severity"]) for a in json.loads(done.stdout)["alerts"]
        }
        assert alerts == {"box1": ("stopped", "warning"), "box2": ("offline", "critical")}
        boxes["box2"].start()
        wait_for(lambda: boxes["box2"].json("status")["mqtt"]["connected"], 20, what="back")
        done = fleet(short_tmp, broker.port, "--wait", "1", "--fail-on", "critical", extra=settings)
        assert done.returncode == 0, done.stdout
        done = fleet(short_tmp, broker.port, "--wait", "1", "--fail-on", "warning", extra=settings)
        assert done.returncode == 1 and "warning  box1: stopped: stopped since" in done.stdout
    finally:
        broker.stop()


def test_stale_health_raises_offline(broker: Broker, peers: list[Peer], short_tmp: Path) -> None:
    """A box whose status still says online but whose health stopped (a hung daemon)."""
    box = Peer(broker.port)
    peers.append(box)
    status = {"state": "online", "session": 1, "ts": 1.0}
    health = {"ts": 1.0, "version": "1.0", "health_interval_s": 1}
    for kind, body in (("status", status), ("health", health)):
        info = box.client.publish(f"agentbox/v1/hung/{kind}", json.dumps(body), qos=1, retain=True)
        info.wait_for_publish(10)
    done = fleet(short_tmp, broker.port, "--json", "--wait", "4")
    [alert] = json.loads(done.stdout)["alerts"]
    assert (alert["device_id"], alert["code"]) == ("hung", "offline")
    assert "no health since" in alert["text"] and done.returncode == 1


def test_a_local_model_that_does_not_load_is_an_alert(daemons: Any, short_tmp: Path) -> None:
    broker = Broker(short_tmp).start()
    try:
        missing = short_tmp / "no-such-model.gguf"
        [box] = boxes_on(broker, daemons, ["box1"], f"[local]\nmodel_path = '{missing}'\n").values()
        box.cli("submit", "--tier", "local", "hello")
        wait_for(lambda: box.json("status")["local"]["load_error"], 30, what="load error")
        done = fleet(short_tmp, broker.port, "--json", "--wait", "6")
        [alert] = json.loads(done.stdout)["alerts"]
        assert alert["code"] == "local_model" and "is not a file" in alert["text"]
    finally:
        broker.stop()


def test_fleet_says_when_the_broker_cannot_be_reached(short_tmp: Path) -> None:
    done = fleet(short_tmp, free_port(), "--wait", "1")
    assert done.returncode == 69
    assert "nothing accepts MQTT at 127.0.0.1:" in done.stderr and "Traceback" not in done.stderr
