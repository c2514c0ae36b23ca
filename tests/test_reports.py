"""The daemon's reports are built from the parts they are given, not from the daemon."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_the_reports_module_loads_neither_the_daemon_nor_its_parts() -> None:
    code = "import sys, agentbox.reports; print(' '.join(sys.modules))"
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(run.stdout.split())
    for part in ("daemon", "mqtt.bridge", "tasks.store", "tasks.scheduler", "routing.pool"):
        assert f"agentbox.{part}" not in loaded, part
