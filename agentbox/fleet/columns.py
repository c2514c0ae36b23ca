"""The live view's columns and filter: what a box's row says, how it sorts, which rows show.

Sized so that the whole row fits 80 columns (the Linux console): each column is its width plus
one space.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from agentbox.fleet import text
from agentbox.fleet.alerts import RANK, SEVERITIES
from agentbox.fleet.model import Box

STYLE = {"critical": "bold bright_red", "warning": "bright_yellow", "info": "cyan"}
STATE_STYLE = {"online": "bright_green", "offline": "bright_red", "stopped": "yellow"}


class Cell(Text):
    """A table cell that sorts by its raw value, not by its text ("9%" before "10%")."""

    def __init__(self, shown: str, order: Any, right: bool = False, style: str = "") -> None:
        super().__init__(shown, style=style, justify="right" if right else "left", no_wrap=True)
        self.order = order


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    cell: Callable[[dict[str, Any]], Cell]


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _percent(field: str) -> Callable[[dict[str, Any]], Cell]:
    return lambda v: Cell(text.cell(_num(v[field]), "{:.0f}"), _num(v[field]), right=True)


def _alerts(v: dict[str, Any]) -> Cell:
    found = v["alerts"]
    worst = max((RANK[a["severity"]] for a in found), default=-1)
    style = STYLE[SEVERITIES[worst]] if found else ""
    return Cell(text.summary(found), (worst, len(found)), style=style)


def fit(name: str, width: int) -> str:
    """A long name cut in the middle, so that kitchen-box1 and kitchen-box2 stay apart."""
    return name if len(name) <= width else name[: width - 4] + "~" + name[-3:]


def _state(v: dict[str, Any]) -> Cell:
    return Cell(v["state"], v["state"], style=STATE_STYLE.get(v["state"], ""))


def _spend(v: dict[str, Any]) -> Cell:
    used, cap = _num(v["today_usd"]), _num(v["daily_cap_usd"])
    share = used / cap if used is not None and cap else None
    return Cell(text.money(used, cap), share, right=True)


def _done(v: dict[str, Any]) -> Cell:
    return Cell(text.pair(v["succeeded_1h"], v["failed_1h"]), _num(v["failed_1h"]), right=True)


COLUMNS = (
    Column(
        "name",
        "name",
        8,
        lambda v: Cell(fit(v["name"] or v["device_id"], 8), v["name"] or v["device_id"]),
    ),
    Column("state", "state", 7, _state),
    Column("alerts", "alerts", 10, _alerts),
    Column("seen", "seen", 8, lambda v: Cell(text.seen(v["last_seen"]), v["last_seen"] or 0)),
    Column("version", "ver", 5, lambda v: Cell(v["version"] or "-", v["version"] or "")),
    Column("cpu", "cpu", 3, _percent("cpu_percent")),
    Column("mem", "mem", 3, _percent("mem_percent")),
    Column("temp", "tmp", 3, _percent("temp_c")),
    Column(
        "disk",
        "disk",
        4,
        lambda v: Cell(text.disk(v["disk_free_mb"]), _num(v["disk_free_mb"]), right=True),
    ),
    Column(
        "queue",
        "jobs",  # queued/running
        4,
        lambda v: Cell(text.pair(v["queued"], v["running"]), _num(v["queued"]), right=True),
    ),
    Column("done", "ok/bad", 6, _done),
    Column("spend", "spend", 6, _spend),
)
KEYS = tuple(c.key for c in COLUMNS)


def cells(view: dict[str, Any]) -> list[Cell]:
    return [c.cell(view) for c in COLUMNS]


def sort_key(cell: Any) -> tuple[bool, Any]:
    """Unknown values last, whatever the column."""
    order = getattr(cell, "order", None)
    return (order is None, order if order is not None else 0)


@dataclass(frozen=True)
class Filter:
    """What the filter line asked for: `state:offline alert:budget_80 kitchen` (all must hold).

    `alert:` takes a code, a severity (that or worse) or `any`; a bare word is part of a name or
    device id.
    """

    states: frozenset[str] = frozenset()
    alerts: frozenset[str] = frozenset()
    words: tuple[str, ...] = ()

    @classmethod
    def parse(cls, line: str) -> Filter:
        states, found, words = set(), set(), []
        for token in line.lower().split():
            kind, sep, value = token.partition(":")
            if sep and kind == "state" and value:
                states.add(value)
            elif sep and kind == "alert" and value:
                found.add(value)
            else:
                words.append(token)
        return cls(frozenset(states), frozenset(found), tuple(words))

    def __bool__(self) -> bool:
        return bool(self.states or self.alerts or self.words)

    def matches(self, box: Box) -> bool:
        if self.states and box.state not in self.states:
            return False
        if self.alerts and not any(self._alert(a.code, a.severity) for a in box.alerts):
            return False
        name = str(box.info.get("name") or "").lower()
        return all(w in name or w in box.device_id.lower() for w in self.words)

    def _alert(self, code: str, severity: str) -> bool:
        for want in self.alerts:
            if want in ("any", code) or (want in RANK and RANK[severity] >= RANK[want]):
                return True
        return False
