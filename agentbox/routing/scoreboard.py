"""How each provider and model has been doing: calls, failures by class, latency, tokens, cost.

Counted in memory per 5-minute bucket and provider/model, a day of buckets kept, the rest
dropped; the store keeps a copy (tasks/scores.py) that is written in the background, never
per call. Latencies go into fixed histogram bins, so buckets add up exactly and a percentile
over any window is read from the summed bins: the upper bound of the bin holding it (capped
at the slowest call seen), never below the true value and at most one bin (25 %) above it.
"""

from __future__ import annotations

import bisect
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from agentbox.providers.base import Completion, Failure, ProviderError

BUCKET_S = 300
HOUR_S = 3600
DAY_S = 86400
# Upper bounds of the latency bins in ms, 10 ms to about 280 s, each 1.25x the one before
# (rounded to whole ms: up to 1.33x below 40 ms); one more bin holds anything slower.
BOUNDS_MS: tuple[int, ...] = tuple(round(10 * 1.25**k) for k in range(47))
BINS = len(BOUNDS_MS) + 1
# A task may name any model: past this many provider/model pairs in a day, new ones are
# counted under "other", which keeps the table (and its copy in the store) bounded.
MAX_KEYS = 16
OTHER = "other"
MODEL_CHARS = 64
# A provider reports its first piece of output as output_tokens == 1 (then every 32): the
# runner times the first token with it and passes it on no further.
FIRST_PIECE = 1
# Failover order: a provider that failed more than half of its calls in the last 15 minutes
# (five calls at least) goes to the end of it until those failures age out.
RECENT_S = 900
FAILING_MIN_CALLS = 5
NOT_ITS_FAULT = ("bad_request", "cancelled")  # the task's or the caller's doing
FAILURES = (
    "auth",
    "quota",
    "rate",
    "timeout",
    "server",
    "connection",
    "cut_off",
    "bad_response",
    "bad_request",
    "unavailable",
    "cancelled",
    "other",
)
_STATUS = re.compile(r"HTTP (\d{3})")
Key = tuple[str, str]


def failure_class(err: ProviderError) -> str:
    """The scoreboard's class of a provider's failure: its Failure, with retryable ones told
    apart by the messages providers/http.py gives them (status, timeout, connection, cut)."""
    if err.failure != Failure.retryable:
        return err.failure.value
    msg = err.message
    if "timed out" in msg:
        return "timeout"
    if "connection failed" in msg or "TLS certificate" in msg:
        return "connection"
    if err.partial is not None or "stream cut off" in msg:
        return "cut_off"
    if "malformed tool call" in msg:
        return "bad_response"
    status = _STATUS.search(msg)
    if status is None:
        return "other"
    code = int(status[1])
    if code == 429:
        return "rate"
    if code == 408:
        return "timeout"
    return "server" if code >= 500 else "other"


@dataclass
class Call:
    """One finished provider call, as the scoreboard counts it."""

    provider: str
    model: str
    total_s: float
    first_s: float | None = None
    failure: str | None = None  # one of FAILURES; None when the call gave a usable answer
    input_tokens: int = 0  # every prompt token, cached ones included
    output_tokens: int = 0
    cost_usd: float = 0.0  # what the ledger booked for it
    at: float = field(default_factory=time.time)


class Stopwatch:
    """Times one call: from now to its first piece (see FIRST_PIECE) and to its end."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.first: float | None = None

    def first_piece(self, info: dict[str, Any]) -> bool:
        """True for the provider's first-piece report, whose time is noted here."""
        if info.get("output_tokens") != FIRST_PIECE:
            return False
        if self.first is None:
            self.first = time.monotonic()
        return True

    def call(
        self,
        provider: str,
        model: str,
        *,
        failure: str | None = None,
        completion: Completion | None = None,
        cost: float = 0.0,
    ) -> Call:
        now = time.monotonic()
        c = completion
        return Call(
            provider,
            model,
            now - self.started,
            None if self.first is None else self.first - self.started,
            failure,
            c.input_tokens + c.cached_tokens + c.cache_write_tokens if c else 0,
            c.output_tokens if c else 0,
            cost,
        )


def _ms_bin(seconds: float) -> int:
    return bisect.bisect_left(BOUNDS_MS, seconds * 1000)  # the first bound >= it


@dataclass
class Bucket:
    """Counts for one provider/model in one 5-minute bucket; buckets add up exactly."""

    calls: int = 0
    answered: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    first_ms: list[int] = field(default_factory=lambda: [0] * BINS)
    end_ms: list[int] = field(default_factory=lambda: [0] * BINS)
    first_max_ms: float = 0.0
    end_max_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    tasks: int = 0  # tasks whose result came from this provider/model

    def add(self, call: Call) -> None:
        self.calls += 1
        if call.failure is None:
            self.answered += 1
            # Latency of answers only: a refusal in 5 ms says nothing about speed.
            self.end_ms[_ms_bin(call.total_s)] += 1
            self.end_max_ms = max(self.end_max_ms, call.total_s * 1000)
            if call.first_s is not None:
                self.first_ms[_ms_bin(call.first_s)] += 1
                self.first_max_ms = max(self.first_max_ms, call.first_s * 1000)
        else:
            self.failures[call.failure] = self.failures.get(call.failure, 0) + 1
        self.input_tokens += call.input_tokens
        self.output_tokens += call.output_tokens
        self.cost_usd += call.cost_usd

    def merge(self, other: Bucket) -> None:
        self.calls += other.calls
        self.answered += other.answered
        for name, n in other.failures.items():
            self.failures[name] = self.failures.get(name, 0) + n
        for mine, theirs in ((self.first_ms, other.first_ms), (self.end_ms, other.end_ms)):
            for i, n in enumerate(theirs):
                if n:  # most bins are empty
                    mine[i] += n
        self.first_max_ms = max(self.first_max_ms, other.first_max_ms)
        self.end_max_ms = max(self.end_max_ms, other.end_max_ms)
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        self.tasks += other.tasks

    def figures(self) -> dict[str, Any]:
        """The JSON figures of a window (`status --json`, README "Provider scoreboard")."""
        return {
            "calls": self.calls,
            "answered": self.answered,
            "failed": self.calls - self.answered,
            "failures": {k: self.failures[k] for k in FAILURES if self.failures.get(k)},
            "first_token_ms": _percentiles(self.first_ms, self.first_max_ms),
            "total_ms": _percentiles(self.end_ms, self.end_max_ms),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 9),
            "tasks_succeeded": self.tasks,
            "cost_per_task_usd": round(self.cost_usd / self.tasks, 9) if self.tasks else None,
        }


def percentile(bins: list[int], q: float, top_ms: float) -> int | None:
    """The q-th percentile of binned latencies: its bin's upper bound, capped at the slowest."""
    n = sum(bins)
    if n == 0:
        return None
    rank = max(1, math.ceil(q * n))
    seen = 0
    for i, count in enumerate(bins):
        seen += count
        if seen >= rank:
            bound = BOUNDS_MS[i] if i < len(BOUNDS_MS) else top_ms
            return round(min(bound, top_ms))
    return round(top_ms)  # not reached: the bins hold n


def _percentiles(bins: list[int], top_ms: float) -> dict[str, int | None]:
    return {"p50": percentile(bins, 0.5, top_ms), "p95": percentile(bins, 0.95, top_ms)}


def bucket_of(at: float) -> int:
    return int(at // BUCKET_S) * BUCKET_S


class Scoreboard:
    """The buckets of the last day, in memory; `take_dirty` hands changed ones to the store."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[int, str, str], Bucket] = {}
        self._dirty: set[tuple[int, str, str]] = set()
        self._keys: set[Key] = set()
        # Per running task, the provider/model of its last answered call: its result's source.
        self._answered: dict[str, Key] = {}
        self._changes = 0  # a summary is kept until the next change or the next bucket
        self._summary: tuple[tuple[int, int], dict[str, Any]] | None = None
        # Sums of the buckets before the current one: they change only when a bucket closes
        # (or at a prune or restore), so a busy box merges a day of buckets once per bucket.
        self._past_changes = 0
        self._past: tuple[tuple[int, int], dict[Key, Bucket], dict[Key, Bucket]] | None = None
        self._newest = 0

    def _key(self, provider: str, model: str) -> Key:
        key = (provider, model[:MODEL_CHARS] or "default")
        if key not in self._keys:
            if len(self._keys) >= MAX_KEYS:
                key = (provider, OTHER)
            self._keys.add(key)
        return key

    def _bucket(self, at: float, key: Key) -> Bucket:
        slot = (bucket_of(at), *key)
        self._dirty.add(slot)
        self._changes += 1
        if slot[0] < self._newest:
            self._past_changes += 1
        self._newest = max(self._newest, slot[0])
        bucket = self.buckets.get(slot)
        if bucket is None:
            bucket = self.buckets[slot] = Bucket()
        return bucket

    def record(self, call: Call, task_id: str = "") -> None:
        key = self._key(call.provider, call.model)
        self._bucket(call.at, key).add(call)
        if task_id and call.failure is None:
            self._answered[task_id] = key

    def task_ended(self, task_id: str, succeeded: bool, at: float | None = None) -> None:
        """A run is over: a success counts for the provider/model that gave its answer."""
        key = self._answered.pop(task_id, None)
        if succeeded and key is not None:
            self._bucket(at or time.time(), key).tasks += 1

    def failing(self, provider: str, now: float | None = None) -> bool:
        """Did the provider fail more than half of its recent calls (see RECENT_S)?"""
        last = bucket_of(now or time.time())
        calls = failed = 0
        for p, model in self._keys:
            if p != provider:
                continue
            for start in range(last - RECENT_S + BUCKET_S, last + 1, BUCKET_S):
                b = self.buckets.get((start, p, model))
                if b is not None:
                    calls += b.calls
                    failed += sum(n for k, n in b.failures.items() if k not in NOT_ITS_FAULT)
        return calls >= FAILING_MIN_CALLS and failed * 2 > calls

    def prune(self, now: float | None = None) -> None:
        """Forget buckets older than a day."""
        oldest = bucket_of((now or time.time()) - DAY_S)
        for slot in [s for s in self.buckets if s[0] < oldest]:
            self._changes += 1
            self._past_changes += 1
            del self.buckets[slot]
            self._dirty.discard(slot)
        self._keys = {(p, m) for _, p, m in self.buckets}

    def take_dirty(self) -> list[tuple[int, str, str, Bucket]]:
        """Copies of the buckets changed since the last take, for the store to write."""
        slots, self._dirty = self._dirty, set()
        out = []
        for slot in sorted(slots):
            bucket = self.buckets.get(slot)
            if bucket is not None:
                copy = Bucket()
                copy.merge(bucket)
                out.append((*slot, copy))
        return out

    def mark_dirty(self, slots: list[tuple[int, str, str]]) -> None:
        """Buckets whose write failed: they go again with the next one."""
        self._dirty.update(s for s in slots if s in self.buckets)

    def restore(self, rows: list[tuple[int, str, str, Bucket]]) -> None:
        """At start: the buckets the store kept (added to any counted since)."""
        self._changes += 1
        self._past_changes += 1
        for at, provider, model, bucket in rows:
            slot = (at, provider, model)
            if slot in self.buckets:
                self.buckets[slot].merge(bucket)
                self._dirty.add(slot)
            else:
                self.buckets[slot] = bucket
            self._keys.add((provider, model))

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """Figures per provider/model with calls in the last day, for the last hour and day."""
        at = now or time.time()
        mark = (self._changes, bucket_of(at))
        if self._summary is not None and self._summary[0] == mark:
            return self._summary[1]
        current = bucket_of(at)
        hours, days = self._sums(current)
        for (start, provider, model), bucket in self.buckets.items():
            if start >= current:
                days.setdefault((provider, model), Bucket()).merge(bucket)
                hours.setdefault((provider, model), Bucket()).merge(bucket)
        rows = [
            {
                "provider": provider,
                "model": model,
                "last_hour": hours.get((provider, model), Bucket()).figures(),
                "last_day": day.figures(),
            }
            for (provider, model), day in sorted(days.items())
            if day.calls or day.tasks
        ]
        summary = {"bucket_s": BUCKET_S, "rows": rows}
        self._summary = (mark, summary)
        return summary

    def _sums(self, current: int) -> tuple[dict[Key, Bucket], dict[Key, Bucket]]:
        """Copies of the last hour's and day's sums of the buckets before `current`."""
        mark = (current, self._past_changes)
        if self._past is None or self._past[0] != mark:
            hour_from = current - HOUR_S + BUCKET_S  # the current bucket and the 11 before
            day_from = current - DAY_S + BUCKET_S
            hours: dict[Key, Bucket] = {}
            days: dict[Key, Bucket] = {}
            for (start, provider, model), bucket in self.buckets.items():
                if day_from <= start < current:
                    days.setdefault((provider, model), Bucket()).merge(bucket)
                    if start >= hour_from:
                        hours.setdefault((provider, model), Bucket()).merge(bucket)
            self._past = (mark, hours, days)
        return _copies(self._past[1]), _copies(self._past[2])


def _copies(sums: dict[Key, Bucket]) -> dict[Key, Bucket]:
    out = {}
    for key, bucket in sums.items():
        out[key] = copy = Bucket()
        copy.merge(bucket)
    return out


def compact(summary: dict[str, Any]) -> dict[str, Any]:
    """The health message's `scoreboard`: per "provider/model", short keys, rounded figures,
    a window left out when it had no calls."""
    out: dict[str, Any] = {}
    for row in summary["rows"]:
        entry = {}
        for name, window in (("1h", row["last_hour"]), ("24h", row["last_day"])):
            if not window["calls"]:
                continue
            short: dict[str, Any] = {"calls": window["calls"], "failed": window["failed"]}
            if window["failures"]:
                short["failures"] = window["failures"]
            for field_name, label in (("first_token_ms", "first_ms"), ("total_ms", "end_ms")):
                p = window[field_name]
                if p["p50"] is not None:
                    short[label] = [p["p50"], p["p95"]]
            short["tokens"] = [window["input_tokens"], window["output_tokens"]]
            short["usd"] = _money(window["cost_usd"])
            short["tasks"] = window["tasks_succeeded"]
            if window["cost_per_task_usd"] is not None:
                short["usd_per_task"] = _money(window["cost_per_task_usd"])
            entry[name] = short
        if entry:
            out[f"{row['provider']}/{row['model']}"] = entry
    return out


def _money(usd: float) -> float:
    """Four significant digits: a cent and a millionth of a dollar both stay readable."""
    return float(f"{usd:.4g}")


WINDOWS = {"last_hour": "last hour", "last_day": "last day"}


def table(summary: dict[str, Any], window: str) -> list[str]:
    """A window's figures as a 78-column table (the console's width), header first; [] when
    no provider had a call in it. Latencies are p50/p95 in seconds; the last column is what
    a thousand successful tasks cost."""
    rows = [r for r in summary["rows"] if r[window]["calls"]]
    if not rows:
        return []
    lines = [
        f"{WINDOWS[window]:<19} {'calls':>5} {'fail':>4} {'1st tok s':>9} {'end s':>9}"
        f" {'tokens':>9} {'cost':>8} {'$/1k ok':>8}"
    ]
    for r in rows:
        w = r[window]
        per_task = w["cost_per_task_usd"]
        lines.append(
            f"{(r['provider'] + ' ' + r['model'])[:19]:<19} {w['calls']:>5} {w['failed']:>4}"
            f" {_seconds(w['first_token_ms']):>9} {_seconds(w['total_ms']):>9}"
            f" {_count(w['input_tokens']) + '/' + _count(w['output_tokens']):>9}"
            f" {_usd(w['cost_usd']):>8} {_usd(per_task * 1000) if per_task is not None else '-':>8}"
        )
    return lines


def failure_lines(summary: dict[str, Any], window: str) -> list[str]:
    """One line per provider/model that failed in the window: its failures by class."""
    out = []
    for r in summary["rows"]:
        failures = r[window]["failures"]
        if failures:
            classes = ", ".join(f"{k} {n}" for k, n in failures.items())
            out.append(f"  {r['provider']} {r['model']} failures: {classes}")
    return out


def _seconds(p: dict[str, int | None]) -> str:
    """p50/p95 in seconds, e.g. 0.31/0.92, or - when nothing was timed."""
    if p["p50"] is None or p["p95"] is None:
        return "-"
    return "/".join(
        f"{ms / 1000:.2f}" if ms < 10000 else f"{ms / 1000:.0f}" for ms in (p["p50"], p["p95"])
    )


def _count(n: int) -> str:
    """At most four characters: 950, 8.4k, 328k, 12M."""
    for scale, unit in ((1_000_000, "M"), (1000, "k")):
        if n >= scale:
            return f"{n / scale:.1f}{unit}" if n < 10 * scale else f"{n // scale}{unit}"
    return str(n)


def _usd(usd: float) -> str:
    if usd == 0:
        return "$0"
    if usd >= 100:
        return f"${usd:.0f}"
    return f"${usd:.2f}" if usd >= 1 else f"${usd:.4f}"
