"""The last update's outcome, kept beside the releases for `status`, health and the console:
`{"state", "from", "to", "error", "at"}` in `<root>/update.json` (world-readable, no secrets)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from agentbox.update.releases import write_atomic

NAME = "update.json"
# [downloading -> verifying ->] installing -> probation -> succeeded | rolled_back |
# rollback_failed; failed: not switched. The first two are kept for updates asked for over MQTT.
STATES = ("downloading", "verifying", "installing", "probation", "succeeded", "rolled_back",
          "rollback_failed", "failed")  # fmt: skip
IN_FLIGHT = STATES[:4]


def write(
    root: Path, state: str, old: str | None, new: str | None, error: str | None = None, **more: Any
) -> dict[str, Any]:
    assert state in STATES
    data = {
        "state": state,
        "from": old,
        "to": new,
        "error": error,
        "at": round(time.time()),
        **more,
    }
    write_atomic(root / NAME, json.dumps(data, indent=1) + "\n")
    return data


def read(root: Path) -> dict[str, Any] | None:
    """The last record, or None when this box was never updated (or the file is unreadable)."""
    try:
        data = json.loads((root / NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
