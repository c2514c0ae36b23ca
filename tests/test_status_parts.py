"""A report with one failing part still answers: the daemon in a sandbox without netlink."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentbox.control_client import ControlClient
from tests.conftest import NO_MQTT

NO_NETLINK = Path(__file__).parent / "faults" / "no_netlink"


def test_status_doctor_and_network_answer_when_interfaces_cannot_be_listed(daemons: Any) -> None:
    d = daemons(NO_MQTT, env={"PYTHONPATH": str(NO_NETLINK)}).start()
    status = d.json("status")
    assert status["network"] is None
    assert "Address family not supported" in status["unavailable"]["network"]
    assert status["queue"] is not None and status["providers"] == {}
    human = d.cli("status").stdout
    assert "network: unavailable (OSError: [Errno 97]" in human
    for _ in range(5):  # the console asks every 2 s: one warning, not one per poll
        d.cli("status")
    with ControlClient(d.state_dir / "control.sock") as client:
        reply = client.call("network")
    assert reply["interfaces"] is None and "interfaces" in reply["unavailable"]
    assert reply["internet"]["ok"] is False  # the reach check points at a closed port
    doctor = d.cli("doctor", check=False).stdout
    assert "running, pid" in doctor and "start it" not in doctor
    assert "daemon report: network" in doctor
    assert d.stop() == 0
    log = d.log()
    assert "Traceback" not in log
    assert log.count("network unavailable") == 1, log


def test_status_tells_the_last_update(daemons: Any, short_tmp: Path) -> None:
    """What `agentbox update` recorded reaches `status --json` and its one line."""
    root = short_tmp / "opt"
    root.mkdir()
    d = daemons(NO_MQTT, env={"AGENTBOX_UPDATE__ROOT": str(root)}).start()
    assert d.json("status")["update"] is None
    record = {"state": "rolled_back", "from": "0.1.0", "to": "0.2.0", "error": "no READY in 90 s",
              "at": 1764633600}  # fmt: skip
    (root / "update.json").write_text(json.dumps(record))
    assert d.json("status")["update"] == record
    line = next(ln for ln in d.cli("status").stdout.splitlines() if ln.startswith("last update"))
    assert "0.1.0 -> 0.2.0 rolled_back" in line and "no READY in 90 s" in line
