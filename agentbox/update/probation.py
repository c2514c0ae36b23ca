"""The probation window: a new release must reach READY in time and then stay up."""

from __future__ import annotations

import time
from collections.abc import Callable

from agentbox.update.service import ServiceManager, ServiceState

POLL_S = 0.25


def _failed(s: ServiceState, base_restarts: int) -> str | None:
    if s.restarts > base_restarts:
        why = "its watchdog stopped" if s.result == "watchdog" else f"result {s.result}"
        return f"it was restarted by the service manager ({why})"
    if s.active in ("failed", "inactive"):
        status = f", exit status {s.exit_status}" if s.exit_status is not None else ""
        return f"it stopped ({s.result or s.active}{status})"
    return None


def watch(
    manager: ServiceManager,
    *,
    ready_timeout_s: float,
    probation_s: float,
    progress: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """None when the service was READY within ready_timeout_s and then stayed up, without a
    restart or a watchdog timeout, for probation_s; else why it failed."""
    base = manager.state().restarts
    started = clock()
    ready_at: float | None = None
    while True:
        s = manager.state()
        base = min(base, s.restarts)  # systemd zeroes NRestarts when our start job runs
        why = _failed(s, base)
        if why is not None:
            return why
        now = clock()
        if ready_at is None:
            if s.active == "active":
                ready_at = now
                progress(f"READY after {now - started:.1f} s; on probation for {probation_s:g} s")
            elif now - started > ready_timeout_s:
                return f"it did not report READY within {ready_timeout_s:g} s"
        elif now - ready_at >= probation_s:
            return None
        sleep(POLL_S)


def wait_ready(manager: ServiceManager, timeout_s: float) -> str | None:
    """For a rollback: None once the service is READY, else why not."""
    base = manager.state().restarts
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        s = manager.state()
        if s.active == "active":
            return None
        why = _failed(s, base)
        if why is not None:
            return why
        time.sleep(POLL_S)
    return f"it did not report READY within {timeout_s:g} s"
