"""The box's device id: from the configuration, else derived from /etc/machine-id.

Standard library only: the first-boot script names the box from it early in boot.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import socket
from pathlib import Path

# Application id for the machine-id derived device id: a hash keyed by the machine id, so the
# raw /etc/machine-id never leaves the box (the same idea as sd_id128_get_machine_app_specific).
_APP_ID = b"agentbox-device-id-v1"


def machine_device_id(machine_id: str) -> str:
    """The device id of a machine id: 16 hex characters that do not reveal the machine id."""
    return hmac.new(machine_id.encode(), _APP_ID, hashlib.sha256).hexdigest()[:16]


def derive_device_id(configured: str) -> str:
    """The configured id, else an app-specific hash of /etc/machine-id, else the hostname."""
    if configured:
        return configured
    try:
        machine_id = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine_id = ""
    if machine_id:
        return machine_device_id(machine_id)
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64]
    return host or "agentbox"
