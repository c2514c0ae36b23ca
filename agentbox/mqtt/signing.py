"""HMAC signatures of requests (`mqtt.require_signature`), and the cache that refuses replays."""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import deque
from typing import Any

from agentbox.vocabulary import ErrorCode, SpecError

WINDOW_S = 300  # a signed request's `ts` may be this far from the box's clock
# Signed requests remembered at once. Only holders of the secret can fill it (signatures are
# checked first); past it the box refuses signed requests until old ones age out, never forgets.
REPLAY_CAPACITY = 100_000


def sign(secret: str, topic: str, device: str, ts: str, payload: bytes) -> str:
    """Hex HMAC-SHA256 of the topic, the device (a pool submission: the pool's name), the
    timestamp, each followed by a newline, then the exact payload bytes."""
    text = f"{topic}\n{device}\n{ts}\n".encode() + payload
    return hmac.new(secret.encode(), text, hashlib.sha256).hexdigest()


def check_signature(secret: str | None, props: Any, topic: str, device: str, payload: bytes) -> str:
    """The request's signature (lower-case hex), or SpecError unless it is signed with `secret`
    for this topic and device within the time window."""
    if not secret:
        raise SpecError(
            ErrorCode.invalid_request,
            "signatures are required but no `mqtt-hmac` key is set on the box",
        )
    pairs = dict(getattr(props, "UserProperty", None) or []) if props is not None else {}
    ts, signature = pairs.get("ts", ""), pairs.get("signature", "")
    if not ts or not signature:
        raise SpecError(
            ErrorCode.invalid_request,
            "unsigned request: user properties `ts` and `signature` are required",
        )
    try:
        at = float(ts)
    except ValueError:
        raise SpecError(ErrorCode.invalid_request, "`ts` is not a Unix time") from None
    if not math.isfinite(at):  # nan compares false with everything: it would pass any window
        raise SpecError(ErrorCode.invalid_request, "`ts` is not a Unix time")
    age = abs(time.time() - at)
    if age > WINDOW_S:
        raise SpecError(ErrorCode.invalid_request, f"signed {age:.0f} s away from now")
    if not hmac.compare_digest(sign(secret, topic, device, ts, payload), signature.lower()):
        raise SpecError(
            ErrorCode.invalid_request,
            "bad signature (it covers the topic, the device id, `ts` and the payload)",
        )
    return str(signature).lower()


class ReplayCache:
    """Signatures seen within the window. A valid `ts` is at most WINDOW_S from arrival, so a
    signature can be valid until 2 * WINDOW_S after it arrived: it is kept that long."""

    def __init__(self, capacity: int = REPLAY_CAPACITY) -> None:
        self.capacity = capacity
        self._seen: dict[str, float] = {}  # signature -> when it may be forgotten
        self._order: deque[tuple[float, str]] = deque()

    def claim(self, signature: str) -> bool:
        """False for a signature already seen; else remember it and return True."""
        now = time.monotonic()
        while self._order and self._order[0][0] <= now:
            until, old = self._order.popleft()
            if self._seen.get(old) == until:  # not claimed again since
                del self._seen[old]
        if signature in self._seen:
            return False
        if len(self._seen) >= self.capacity:
            raise SpecError(
                ErrorCode.invalid_request,
                f"more than {self.capacity} signed requests in {2 * WINDOW_S} s; retry later",
            )
        self._seen[signature] = until = now + 2 * WINDOW_S
        self._order.append((until, signature))
        return True

    def seen(self, signature: str) -> bool:
        """Claimed within the window (a replay, or a redelivery of a request served)."""
        return signature in self._seen

    def release(self, signature: str) -> None:
        """The request was not handled (it is redelivered): its signature may come again."""
        self._seen.pop(signature, None)  # its place in the order expires harmlessly
