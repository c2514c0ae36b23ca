"""systemd notify protocol: a thin wrapper over sdnotify that also owns the watchdog interval."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable

import sdnotify

log = logging.getLogger("agentbox.notify")


def watchdog_interval() -> float | None:
    """Seconds between required pings, from $WATCHDOG_USEC (None when systemd wants none)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000


def ascii_line(text: str, limit: int = 200) -> str:
    """STATUS text: one line of printable ASCII, so any journal viewer shows it as sent."""
    cleaned = "".join(c if 32 <= ord(c) < 127 else "?" for c in text.replace("\n", " "))
    return cleaned[:limit]


class Notifier:
    """Sends READY/STATUS/WATCHDOG/RELOADING/STOPPING; a no-op without $NOTIFY_SOCKET."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._sd = sdnotify.SystemdNotifier() if self.enabled else None
        self.watchdog_s = watchdog_interval()

    def _send(self, *lines: str) -> None:
        if self._sd is not None:
            self._sd.notify("\n".join(lines))

    def ready(self, status: str) -> None:
        self._send("READY=1", f"STATUS={ascii_line(status)}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={ascii_line(status)}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def reloading(self) -> None:
        # systemd 253+ wants MONOTONIC_USEC with RELOADING=1 for Type=notify-reload.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading configuration")

    def stopping(self) -> None:
        self._send("STOPPING=1", "STATUS=stopping")


async def watchdog_loop(notifier: Notifier, healthy: Callable[[], Awaitable[None]]) -> None:
    """Ping at half the interval from the event loop, and only while `healthy()` returns in time.

    Being a task on the loop is the point: a blocked loop stops the pings and systemd restarts
    the service. `healthy` adds a check of a part the loop does not see (the store's thread).
    """
    interval = notifier.watchdog_s
    if not interval:
        return
    period = interval / 2
    while True:
        try:
            await asyncio.wait_for(healthy(), timeout=period)
        except Exception as exc:  # any failed check withholds the ping; systemd decides
            log.error("health check failed (%s); withholding the watchdog ping", exc or "timeout")
        else:
            notifier.watchdog()
        await asyncio.sleep(period)
