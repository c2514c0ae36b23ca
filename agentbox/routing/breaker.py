"""Circuit breaker per cloud provider: the state health reports and failover reads."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from agentbox.providers.base import Failure, ProviderError

OK = "ok"
COOLDOWN = "cooldown"
AUTH_FAILED = "auth_failed"
QUOTA_EXHAUSTED = "quota_exhausted"
UNREACHABLE = "unreachable"

TRIP_AFTER = 3  # consecutive failures before a provider is skipped
BASE_COOLDOWN_S = 30.0
MAX_COOLDOWN_S = 600.0


@dataclass
class Breaker:
    name: str
    state: str = OK
    failures: int = 0
    open_until: float = 0.0
    last_error: str = ""

    def available(self, now: float | None = None) -> bool:
        """May a call go out? After a cooldown one trial call is let through (half-open)."""
        if self.state == OK:
            return True
        if self.state == AUTH_FAILED:
            return False
        return (now or time.time()) >= self.open_until

    def success(self) -> None:
        self.state, self.failures, self.open_until = OK, 0, 0.0

    def failure(self, err: ProviderError, now: float | None = None) -> None:
        at = now or time.time()
        self.last_error = err.message
        if err.failure == Failure.auth:
            self.state = AUTH_FAILED
        elif err.failure == Failure.quota:
            self.state = QUOTA_EXHAUSTED
            self.open_until = err.until or at + BASE_COOLDOWN_S
        elif err.failure == Failure.retryable:
            self.failures += 1
            if err.retry_after:
                self.state, self.open_until = COOLDOWN, at + err.retry_after
            elif self.failures >= TRIP_AFTER:
                wait = min(BASE_COOLDOWN_S * 2 ** (self.failures - TRIP_AFTER), MAX_COOLDOWN_S)
                self.state = UNREACHABLE if "connection failed" in err.message else COOLDOWN
                self.open_until = at + wait

    def reset_auth(self) -> None:
        """A new key was loaded: give the provider another chance."""
        if self.state == AUTH_FAILED:
            self.success()

    def status(self, now: float | None = None) -> dict[str, Any]:
        at = now or time.time()
        wait = max(self.open_until - at, 0.0) if self.state != OK else 0.0
        return {"state": self.state, "retry_in_s": round(wait, 1), "last_error": self.last_error}
