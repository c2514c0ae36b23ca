"""Logging: one line per event, syslog priority prefixes under journald, secrets scrubbed."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections import deque
from typing import Any

# sd-daemon(3) priority prefixes: journald maps "<N>" at the start of a line to PRIORITY=N.
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


# The shortest beginning of a secret that mask() hides at the end of a text; shorter ones
# are too common to mask and too short to be worth anything.
TAIL_MIN = 6


def _tail(text: str, secret: str) -> str:
    """`text` without a beginning of `secret` at its end: what a cut made before the text
    reached us leaves of a key (full copies are replaced before this looks)."""
    head = secret[:TAIL_MIN]
    at = text.find(head, max(0, len(text) - len(secret) + 1))
    while at != -1:
        if secret.startswith(text[at:]):
            return text[:at] + "***"
        at = text.find(head, at + 1)
    return text


def mask(text: str, secrets: frozenset[str] | set[str], limit: int | None = None) -> str:
    """`text` with each secret, and a secret's beginning left at its end, as ***; then cut to
    `limit` characters. Masking comes first: a cut must never leave part of a key to find."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
        if len(secret) > TAIL_MIN:
            text = _tail(text, secret)
    return text if limit is None else text[:limit]


class Scrubber(logging.Filter):
    """Replaces every known secret value with *** in each record before it is formatted."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def set_secrets(self, values: set[str]) -> None:
        with self._lock:
            self._secrets = frozenset(v for v in values if len(v) >= 4)

    def scrub(self, text: str, limit: int | None = None) -> str:
        """mask() with every known secret: the one way to cut text that leaves the box."""
        return mask(text, self._secrets, limit)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            record.msg = self.scrub(record.getMessage())
            record.args = None
            if record.exc_info and not record.exc_text:  # the formatter reuses exc_text
                record.exc_text = self.scrub(_PLAIN.formatException(record.exc_info))
        return True


_PLAIN = logging.Formatter()


class OneLineFormatter(logging.Formatter):
    """Keeps each event on one line so journald and grep see one record per event."""

    def __init__(self, journald: bool) -> None:
        fmt = (
            "%(name)s: %(message)s"
            if journald
            else "%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        super().__init__(fmt)
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.exc_info and record.levelno < logging.ERROR:
            # Expected failures are logged without their traceback.
            text = text.split("\n", 1)[0]
        text = text.replace("\r", "\\r").replace("\n", " | ")
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{text}"
        return text


class RecentErrors(logging.Handler):
    """The last warnings and errors, kept for `status` (the console shows them); scrubbed."""

    def __init__(self, size: int = 20) -> None:
        super().__init__(logging.WARNING)
        self.records: deque[dict[str, Any]] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().replace("\n", " | ")
        self.records.append(
            {"ts": round(record.created, 3), "level": record.levelname.lower(), "message": text}
        )

    def last(self, n: int = 5) -> list[dict[str, Any]]:
        return list(self.records)[-n:]


SCRUBBER = Scrubber()
RECENT = RecentErrors()


def setup(level: str | None = None) -> None:
    """Configure the root logger for the daemon: stderr, one line per event."""
    journald = bool(os.environ.get("JOURNAL_STREAM"))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(journald))
    handler.addFilter(SCRUBBER)
    root = logging.getLogger()
    RECENT.addFilter(SCRUBBER)
    root.handlers[:] = [handler, RECENT]
    root.setLevel(level or os.environ.get("AGENTBOX_LOG_LEVEL", "INFO").upper())
    for noisy in ("httpx", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
