"""What this box learned about routing from its own work: local answers that had to be escalated
(heavy) and tiers users pinned (their label). Bounded, kept in the store's meta table."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentbox.routing.features import BUCKETS, Features
from agentbox.routing.model import LinearModel, sigmoid

log = logging.getLogger("agentbox.routing")
KEY = "routing.learned"
MAX_OFFSET = 0.1  # the thresholds move at most this far, either way
OFFSET_STEP = 0.01  # per example the model got wrong
RATE = 2.0  # of the per-box corrections: a run of five escalations moves a kind
MAX_WEIGHT = 2.0  # per word or word-pair slot, either way
MAX_SLOTS = 4096  # the smallest corrections go first past this
KINDS = ("escalated", "pinned_cloud", "pinned_local")


class MetaStore(Protocol):
    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str | None) -> None: ...


@dataclass
class Learned:
    offset: float = 0.0
    delta: dict[int, float] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    updated_at: float | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "offset": round(self.offset, 4),
                "delta": {str(i): round(d, 4) for i, d in self.delta.items()},
                "counts": dict(self.counts),
                "updated_at": self.updated_at,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Learned:
        data = json.loads(text)
        offset = max(-MAX_OFFSET, min(MAX_OFFSET, float(data.get("offset", 0.0))))
        delta = {
            int(i): max(-MAX_WEIGHT, min(MAX_WEIGHT, float(d)))
            for i, d in (data.get("delta") or {}).items()
            if 0 <= int(i) < BUCKETS
        }
        counts = Counter({k: int(v) for k, v in (data.get("counts") or {}).items() if k in KINDS})
        return cls(offset, delta, counts, data.get("updated_at"))

    def summary(self) -> dict[str, Any]:
        return {
            "examples": sum(self.counts.values()),
            **{k: self.counts.get(k, 0) for k in KINDS},
            "threshold_offset": round(self.offset, 4),
            "weights_adjusted": len(self.delta),
            "updated_at": self.updated_at,
        }


class BoxLearning:
    """The per-box corrections the router adds to its shipped model, and their persistence."""

    def __init__(self, model: LinearModel, store: MetaStore | None = None) -> None:
        self.model = model
        self.store = store
        self.state = Learned()
        self._dirty = False
        self._saving: asyncio.Task[None] | None = None

    async def load(self) -> None:
        if self.store is None:
            return
        text = await self.store.get_meta(KEY)
        if text is None:
            return
        try:
            self.state = Learned.from_json(text)
        except (ValueError, TypeError, AttributeError) as exc:
            log.error("routing: ignoring unreadable learned state (%s); starting afresh", exc)

    def threshold(self, mode: str) -> float:
        return min(max(self.model.thresholds[mode] + self.state.offset, 0.01), 0.99)

    def observe(self, f: Features, heavy: bool, kind: str, mode: str, shift: float = 0.0) -> None:
        """One labeled example: a logistic step on the corrections of its words and word
        pairs (but the model's common ones, which every kind of prompt has), and the threshold
        nudged when the model sent the prompt the wrong way (`shift`: the router's fixed
        adjustments of this task's logit)."""
        s = self.state
        p = sigmoid(self.model.logit(f, s.delta) + shift)
        g = p - (1.0 if heavy else 0.0)
        common = self.model.common
        slots = [(i, v) for i, v in f.values.items() if i < BUCKETS]
        slots += [(i, f.pair_scale) for i in f.pairs]
        for i, v in slots:
            if i not in common:
                d = s.delta.get(i, 0.0) - RATE * g * v
                s.delta[i] = max(-MAX_WEIGHT, min(MAX_WEIGHT, d))
        if heavy and p < self.threshold(mode):
            s.offset = max(s.offset - OFFSET_STEP, -MAX_OFFSET)
        elif not heavy and p >= self.threshold(mode):
            s.offset = min(s.offset + OFFSET_STEP, MAX_OFFSET)
        if len(s.delta) > MAX_SLOTS:
            keep = sorted(s.delta.items(), key=lambda kv: -abs(kv[1]))[:MAX_SLOTS]
            s.delta = dict(keep)
        s.counts[kind] += 1
        s.updated_at = round(time.time(), 3)
        self._save_soon()

    async def reset(self) -> dict[str, Any]:
        """Forget everything this box learned; returns what was forgotten."""
        forgot = self.state.summary()
        self.state = Learned()
        self._dirty = False
        if self._saving is not None:
            await asyncio.shield(self._saving)  # a write in flight must not bring it back
        if self.store is not None:
            await self.store.set_meta(KEY, None)
        return forgot

    async def flush(self) -> None:
        """Wait for the last observation to be written (at stop)."""
        if self._saving is not None:
            await asyncio.shield(self._saving)

    def _save_soon(self) -> None:
        self._dirty = True
        if self.store is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._saving is None or self._saving.done():
            self._saving = loop.create_task(self._save(), name="routing-learned")

    async def _save(self) -> None:
        """Writes coalesce: a burst of examples is one or two writes."""
        assert self.store is not None
        while self._dirty:
            self._dirty = False
            try:
                await self.store.set_meta(KEY, self.state.to_json())
            except Exception as exc:  # kept in memory; the next example tries again
                log.error("routing: cannot store what was learned: %s", exc)
                return
