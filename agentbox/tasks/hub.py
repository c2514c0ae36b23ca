"""The one path of task events: what the store committed and what running tasks report, in
the order it happened, for the MQTT drain (followers) and local waiters (watchers)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentbox.tasks.rows import Event, TaskRow

# Items a follower may be behind before the hub drops them: a slow or cut-off broker must not
# hold unbounded memory; the follower then reads the outbox table again.
LIVE_MAX = 5000
Update = tuple[str, dict[str, Any]]  # (event name, the task's body) for a watcher


@dataclass(frozen=True)
class Change:
    """One event an op committed: the task as the event shows it, and its outbox row (None
    while the outbox is off, with MQTT disabled)."""

    event: str
    row: TaskRow
    outbox: Event | None


@dataclass(frozen=True)
class Note:
    """A running task's `progress` or `retry`: for whoever listens now, kept in no table."""

    task_id: str
    event: str
    info: dict[str, Any]


Item = Event | Note  # what a follower takes: committed outbox events and notes, in order


class Follower:
    """Every outbox event and note from its start, in order; dropped once `limit` wait."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.first: int | None = None  # seq of its first event: older ones are in the table
        self._items: list[Item] | None = []
        self._ready = asyncio.Event()

    def add(self, items: Sequence[Item]) -> None:
        """The hub's: new items, in order."""
        if self._items is None:
            return
        if self.first is None:
            self.first = next((i.seq for i in items if isinstance(i, Event)), None)
        self._items.extend(items)
        if len(self._items) > self.limit:
            self._items = None  # fell behind: the table is the only source now
        self._ready.set()

    def take(self) -> list[Item] | None:
        """What came since the last take, in order; None once it fell behind (for good)."""
        taken = self._items
        if taken is not None:
            self._items = []
        return taken

    async def wait(self) -> None:
        """Until there is something to take, or the follower was dropped."""
        while self._items == []:
            self._ready.clear()
            await self._ready.wait()


class Hub:
    """Fed by the store after each commit and by the scheduler's notes; nothing is stored here."""

    def __init__(self) -> None:
        self._followers: list[Follower] = []
        self._watchers: dict[str, set[asyncio.Queue[Update]]] = defaultdict(set)

    def committed(self, changes: Sequence[Change]) -> None:
        """The events of one commit, in the order its ops staged them (outbox seq order)."""
        if self._followers:
            events = [c.outbox for c in changes if c.outbox is not None]
            if events:
                for follower in self._followers:
                    follower.add(events)
        if self._watchers:
            for c in changes:
                self._tell(c.row, c.event, None)

    def note(self, row: TaskRow, event: str, info: dict[str, Any]) -> None:
        """A running task's progress or retry, placed after every event committed so far."""
        if self._followers:
            item = [Note(row.id, event, info)]
            for follower in self._followers:
                follower.add(item)
        self._tell(row, event, info)

    def follow(self, limit: int = LIVE_MAX) -> Follower:
        """Events and notes from now on; read the outbox table for those before `first`."""
        follower = Follower(limit)
        self._followers.append(follower)
        return follower

    def unfollow(self, follower: Follower) -> None:
        if follower in self._followers:
            self._followers.remove(follower)

    def watch(self, task_id: str) -> asyncio.Queue[Update]:
        """A queue of (event, body) updates for one task, until unwatch()."""
        queue: asyncio.Queue[Update] = asyncio.Queue()
        self._watchers[task_id].add(queue)
        return queue

    def unwatch(self, task_id: str, queue: asyncio.Queue[Update]) -> None:
        watchers = self._watchers.get(task_id)
        if watchers is not None:
            watchers.discard(queue)
            if not watchers:
                del self._watchers[task_id]

    def _tell(self, row: TaskRow, event: str, info: dict[str, Any] | None) -> None:
        watchers = self._watchers.get(row.id)
        if not watchers:
            return
        body = row.body()
        if info:
            body["info"] = info
        for queue in watchers:
            queue.put_nowait((event, body))
