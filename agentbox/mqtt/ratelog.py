"""Warnings about refused messages: the first few of each period one by one, then one summary.

A flood of junk must not become a flood of log lines (journald on an SD card, and the log
ring the console shows): past the burst, refusals are only counted, per reason, and one line
per period says how many there were.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

PERIOD_S = 60.0
BURST = 10  # lines logged one by one per period


class RateLog:
    def __init__(self, log: logging.Logger, period_s: float = PERIOD_S, burst: int = BURST) -> None:
        self.log = log
        self.period_s = period_s
        self.burst = burst
        self._start = time.monotonic()
        self._logged = 0
        self._held: Counter[str] = Counter()
        self._flush: asyncio.TimerHandle | None = None

    def warning(self, reason: str, msg: str, *args: object) -> None:
        """Log `msg` now while within the burst; else count it under `reason`."""
        self._roll()
        if self._logged < self.burst:
            self._logged += 1
            self.log.warning(msg, *args)
        else:
            self.count(reason)

    def count(self, reason: str, n: int = 1) -> None:
        """Count an event for the period's summary line without logging it by itself."""
        self._held[reason] += n
        if self._flush is None:
            loop = asyncio.get_running_loop()
            wait = max(0.0, self._start + self.period_s - time.monotonic())
            self._flush = loop.call_later(wait, self.flush)

    def flush(self) -> None:
        """The summary line of what was counted, if anything (at the end of each period)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._held:
            parts = ", ".join(f"{reason} {n}" for reason, n in self._held.most_common())
            total = sum(self._held.values())
            self.log.warning("%d more refused message(s) not logged one by one: %s", total, parts)
            self._held.clear()
        self._start, self._logged = time.monotonic(), 0

    def _roll(self) -> None:
        if time.monotonic() - self._start >= self.period_s:
            self.flush()
