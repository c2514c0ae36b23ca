"""The daemon's side of updates over MQTT: a request is checked and spooled for the root
updater (never run here: the daemon is unprivileged), and update.json, which the updater
writes, is turned into `update` events.

Imports nothing heavy (no cryptography): the daemon loads it at start.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agentbox.update import record, request
from agentbox.update.download import shown
from agentbox.vocabulary import ErrorCode, SpecError

STALE_S = 3600.0  # an in-flight record this old, with no updater behind it, no longer blocks
# requested_at: the box's clock when it spooled the request, which names the update it asked for
SUMMARY = ("state", "from", "to", "error", "at", "requested_at")


def summary(last: dict[str, Any] | None) -> dict[str, Any] | None:
    """What info, health and events carry of the last update: {state, from, to, error, at}."""
    return None if last is None else {k: last.get(k) for k in SUMMARY}


class RemoteUpdates:
    """Takes update requests for one box and reports the updater's progress."""

    def __init__(self, state_dir: Path, root: Path, version: str, window_s: float) -> None:
        self.state_dir, self.root, self.version = state_dir, root, version
        # An update on probation writes nothing for up to ready_timeout_s + probation_s.
        self.window_s = max(STALE_S, window_s + 600)
        self._seen: tuple[Any, ...] | None = None

    def last(self) -> dict[str, Any] | None:
        return record.read(self.root)

    def _in_flight(self, last: dict[str, Any] | None) -> bool:
        if last is None or last.get("state") not in record.IN_FLIGHT:
            return False
        at = last.get("at")
        return isinstance(at, int | float) and time.time() - at < self.window_s

    def handle(self, data: dict[str, Any]) -> dict[str, Any]:
        """The answer to one request: spooled, or the state of the same update already asked
        for; SpecError when it is malformed or another update is under way."""
        data.pop("reply_to", None)
        if "at" in data:  # the box's own clock says when; a request never does
            raise SpecError(ErrorCode.invalid_request, "unknown field 'at'")
        try:
            req = request.parse(data)
        except request.RequestError as exc:
            raise SpecError(ErrorCode.invalid_request, str(exc)) from None
        last = self.last()
        spooled = request.pending(self.state_dir)
        if spooled is not None or self._in_flight(last):
            if _same(req, spooled, last):
                return _answer("in_flight", last, spooled)
            raise SpecError(
                ErrorCode.invalid_request,
                "another update is under way on this box; ask again when it has finished",
            )
        if req.version is not None and req.version == self.version:
            return _answer("current", last, None)
        request.spool(self.state_dir, req)
        return _answer("requested", last, req)

    def changed(self) -> dict[str, Any] | None:
        """The `update` event to publish when update.json changed since the last call (the
        first call after a start reports what it holds, so a restart repeats the last state)."""
        last = self.last()
        key = None if last is None else tuple(last.get(k) for k in SUMMARY)
        if key == self._seen:
            return None
        self._seen = key
        if last is None:
            return None
        return {"event": "update", **(summary(last) or {}), "version": self.version}


def _same(
    req: request.Request, spooled: request.Request | None, last: dict[str, Any] | None
) -> bool:
    if spooled is not None:
        return spooled.sha256 == req.sha256
    assert last is not None
    return last.get("sha256") == req.sha256 or (
        req.version is not None and last.get("to") == req.version
    )


def _answer(what: str, last: dict[str, Any] | None, req: request.Request | None) -> dict[str, Any]:
    body: dict[str, Any] = {"request": what, "update": summary(last)}
    body["requested_at"] = req.at if req is not None else (last or {}).get("requested_at")
    if req is not None:
        body["url"] = shown(req.url)  # never a password or a token it may carry
        body["sha256"] = req.sha256
    return body
