"""An update asked for over MQTT: validated by the daemon, spooled in its state dir, and taken
(validated again) by the root updater that `agentbox-update.path` starts.

The daemon runs unprivileged and never installs anything itself; the spool file is the whole
hand-over. The updater trusts nothing in it: the bundle's signature and hashes are checked
as for `agentbox update FILE`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentbox.update.download import DownloadError, check_url
from agentbox.update.releases import write_atomic

SPOOL_DIR = "update-request"  # under the state dir; watched by agentbox-update.path
NAME = "request.json"
FIELDS = {"url", "sha256", "signature", "version", "allow_downgrade"}
MAX_URL = 2048
SIG_RE = re.compile(r"^[A-Za-z0-9+/]{86}==$")  # base64 of a 64-byte ed25519 signature
VERSION_RE = re.compile(r"^[0-9][A-Za-z0-9.+_-]{0,63}$")


class RequestError(ValueError):
    """A request that cannot be spooled or run; one line saying why."""


@dataclass(frozen=True)
class Request:
    url: str
    sha256: str
    signature: str | None  # the bundle's manifest.sig, when the operator pins it too
    version: str | None  # what the operator says it is; the bundle's manifest decides
    at: float
    allow_downgrade: bool = False  # an older release may be installed (docs/updates.md)

    def to_dict(self) -> dict[str, Any]:
        data = {"url": self.url, "sha256": self.sha256, "signature": self.signature,
                "version": self.version, "at": self.at}  # fmt: skip
        # Only when asked, as fleet update sends it: a release before the rule refuses the field.
        return data | ({"allow_downgrade": True} if self.allow_downgrade else {})


def spool_path(state_dir: Path) -> Path:
    return state_dir / SPOOL_DIR / NAME


def parse(data: Mapping[str, Any], at: float | None = None) -> Request:
    """The request, or RequestError naming the first field that is wrong."""
    unknown = sorted(set(data) - FIELDS - {"at"})
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}")
    url = data.get("url")
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise RequestError(f"'url' must be a string of at most {MAX_URL} characters")
    try:
        check_url(url)
    except DownloadError as exc:
        raise RequestError(str(exc)) from None
    sha = data.get("sha256")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
        raise RequestError("'sha256' must be the bundle's sha256, 64 hex digits")
    sig = data.get("signature")
    if sig is not None and (not isinstance(sig, str) or not SIG_RE.match(sig)):
        raise RequestError("'signature' must be the bundle's manifest.sig (base64 ed25519)")
    version = data.get("version")
    if version is not None and (not isinstance(version, str) or not VERSION_RE.match(version)):
        raise RequestError("'version' must be a release version")
    allow = data.get("allow_downgrade", False)
    if not isinstance(allow, bool):
        raise RequestError("'allow_downgrade' must be true or false")
    when = data.get("at", at if at is not None else time.time())
    if not isinstance(when, int | float) or isinstance(when, bool):
        raise RequestError("'at' must be a Unix time")
    return Request(url, sha.lower(), sig, version, float(when), allow)


def spool(state_dir: Path, req: Request) -> Path:
    """Write the request where the updater's path unit looks (atomically: it sees all or none)."""
    path = spool_path(state_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, json.dumps(req.to_dict()) + "\n", mode=0o600)
    return path


def pending(state_dir: Path) -> Request | None:
    """The request spooled and not yet taken by the updater, if any."""
    try:
        return parse(json.loads(spool_path(state_dir).read_text()))
    except (OSError, ValueError):
        return None


def take(path: Path) -> Request:
    """Read and remove the spooled request (removed first thing, so the path unit does not
    start the updater again for the same one, even when this request is refused)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise RequestError(f"{path}: cannot read: {exc.strerror}") from None
    path.unlink(missing_ok=True)
    try:
        data = json.loads(text)
    except ValueError:
        raise RequestError(f"{path}: not JSON") from None
    if not isinstance(data, dict):
        raise RequestError(f"{path}: not a JSON object")
    return parse(data)
