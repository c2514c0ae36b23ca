"""How the updater stops, starts and watches the daemon: a seam with systemd behind it.

Tests put a real supervisor of child processes behind the same seam (tests/test_update_*).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Protocol

UNIT = "agentbox.service"


@dataclass(frozen=True)
class ServiceState:
    """systemd's view of the unit: ActiveState, SubState, NRestarts, Result, ExecMainStatus."""

    active: str  # active (READY seen) | activating | deactivating | inactive | failed
    sub: str
    restarts: int  # automatic restarts so far (a crash, a watchdog timeout)
    result: str  # success | exit-code | signal | watchdog | timeout | ...
    exit_status: int | None


class ServiceError(Exception):
    """The service manager could not do what was asked."""


class ServiceManager(Protocol):
    def stop(self) -> None:
        """Stop the daemon and wait until it has exited."""

    def start(self) -> None:
        """Start the daemon without waiting for READY (probation watches that)."""

    def state(self) -> ServiceState: ...


class Systemd:
    """The box's agentbox.service through systemctl."""

    def __init__(self, unit: str = UNIT) -> None:
        self.unit = unit

    def _systemctl(self, *args: str) -> str:
        try:
            proc = subprocess.run(
                ["systemctl", *args], capture_output=True, text=True, timeout=120, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServiceError(f"systemctl {args[0]}: {exc}") from None
        if proc.returncode != 0:
            raise ServiceError(f"systemctl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def stop(self) -> None:
        self._systemctl("stop", self.unit)

    def start(self) -> None:
        # Type=notify: a blocking start would wait for READY itself, and a release that never
        # sends it would hold us until TimeoutStartSec; probation watches instead.
        self._systemctl("reset-failed", self.unit)
        self._systemctl("start", "--no-block", self.unit)

    def state(self) -> ServiceState:
        out = self._systemctl(
            "show", "-p", "ActiveState,SubState,NRestarts,Result,ExecMainStatus", self.unit
        )
        return parse_show(out)


def parse_show(text: str) -> ServiceState:
    """`systemctl show -p ...` output (KEY=value lines) as a ServiceState."""
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    status = values.get("ExecMainStatus", "")
    restarts = values.get("NRestarts", "0")
    return ServiceState(
        active=values.get("ActiveState", "unknown"),
        sub=values.get("SubState", ""),
        restarts=int(restarts) if restarts.isdigit() else 0,
        result=values.get("Result", ""),
        exit_status=int(status) if status.lstrip("-").isdigit() else None,
    )
