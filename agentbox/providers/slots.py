"""A counting limit whose size can change while calls wait on it (asyncio.Semaphore's cannot)."""

from __future__ import annotations

import asyncio
from collections import deque

import httpx


class Slots:
    """At most `limit` holders; the others wait in order, up to a timeout."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, wait_s: float | None) -> None:
        """Take a slot, or raise httpx.PoolTimeout after `wait_s` seconds."""
        if self.busy < self.limit and not self._waiters:
            self.busy += 1  # free: returns at once, no timer to set up
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._grant()
        if waiter.done():
            return
        try:
            async with asyncio.timeout(wait_s):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as the wait ended: hand it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("no free connection in time") from None
            raise

    def release(self) -> None:
        self.busy -= 1
        self._grant()

    def resize(self, limit: int) -> None:
        """A new limit; holders beyond a smaller one keep their slots until they release."""
        self.limit = limit
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.busy < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.busy += 1
                waiter.set_result(None)
