"""Spend caps against a fake provider that bills by its own count: more input than the box's
estimate, calls cancelled, timed out and killed mid-flight. Recorded spend never passes the
cap and never under-counts what the provider billed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextlib import closing
from typing import Any

import pytest

from agentbox.providers.base import Completion, Failure, ProviderError
from agentbox.providers.prices import PriceTable
from tests.conftest import NO_MQTT, wait_for
from tests.fakes import FakeProvider, Reply, openai_stream

MODEL = "gpt-4o-mini"
# Non-ASCII on purpose: the provider counts bytes, not characters.
PROMPT = "Résumé d'une réunion: " + "naïve café, señor, über ümlaut; " * 90


class Billing:
    """A hostile but possible provider: a token per byte of every message (no real tokenizer
    makes shorter tokens), 4 tokens of framing each, and every output token allowed, billed
    as soon as the request arrives (a call cut short later costs the same)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.bills: list[Completion] = []
        self._lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> Reply:
        body = request["json"]
        prompt = 3 + sum(len(str(m.get("content") or "").encode()) + 4 for m in body["messages"])
        out = int(body["max_tokens"])
        with self._lock:
            self.bills.append(Completion("", MODEL, prompt, out))
        reply = openai_stream("fine", prompt_tokens=prompt, completion_tokens=out)
        reply.delay = self.delay
        return reply

    def cost(self) -> float:
        prices = PriceTable()
        return sum(prices.cost(c)[0] for c in self.bills)


def cloud(fake: FakeProvider, **budget: float) -> dict[str, Any]:
    return {
        "providers": {"c": {"kind": "openai", "base_url": f"{fake.url}/v1", "model": MODEL}},
        "budget": {"daily_usd": 10.0, "monthly_usd": 100.0, "per_task_usd": 1.0, **budget},
        "tasks": {"cloud_concurrency": 32},  # all the slow calls at the provider at once
    }


async def ledger(rig: Any) -> tuple[float, int, int, int]:
    """(recorded USD, rows, rows marked estimated, rows still in flight) in the store itself."""

    def op(c: Any) -> tuple[float, int, int, int]:
        total, rows, estimated, in_flight = c.execute(
            "SELECT coalesce(sum(cost_usd), 0), count(*), coalesce(sum(estimated), 0),"
            " coalesce(sum(in_flight), 0) FROM usage"
        ).fetchone()
        return float(total), rows, estimated, in_flight

    result: tuple[float, int, int, int] = await rig.ledger.store.read(op)
    return result


async def until(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
    assert predicate(), what


async def test_a_hundred_concurrent_calls_billed_past_the_estimate_stay_under_the_cap(
    rig_factory: Any, fake: FakeProvider
) -> None:
    billing = Billing()
    fake.answer = billing
    one = billing({"json": {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 50}})
    assert one.events
    per_call = billing.cost()
    billing.bills.clear()
    cap = per_call * 10.5
    rig = await rig_factory(cloud(fake, daily_usd=cap))
    spec = {"prompt": PROMPT, "tier": "cloud", "max_tokens": 50}
    results = await asyncio.gather(*(rig.run(spec) for _ in range(100)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, ProviderError) and r.failure == Failure.budget]
    done = [r for r in results if not isinstance(r, BaseException)]
    assert len(done) + len(refused) == 100, [r for r in results if isinstance(r, Exception)][:3]
    for out in done:  # as the scheduler does: a result's bill is stored with it
        for bill in out.bills:
            await rig.ledger.record(bill)
    recorded, rows, _, in_flight = await ledger(rig)
    print(
        f"\ncap ${cap:.6f}; {len(done)} calls ran, billed by the fake ${billing.cost():.6f};"
        f" recorded ${recorded:.6f}"
    )
    assert done and refused
    assert recorded <= cap + 1e-12, f"recorded ${recorded:.6f} is over the cap ${cap:.6f}"
    assert recorded >= billing.cost() - 1e-12, "recorded less than the provider billed"
    assert rows == len(fake.requests) == len(billing.bills) and in_flight == 0
    assert rig.budget.reserved == pytest.approx(0)


async def test_calls_cancelled_or_past_their_deadline_mid_flight_are_booked(
    rig_factory: Any, fake: FakeProvider
) -> None:
    billing = Billing(delay=3.0)
    fake.answer = billing
    rig = await rig_factory(cloud(fake))
    spec = {"prompt": "Summarise the minutes.", "tier": "cloud", "max_tokens": 400}
    deadlines = [asyncio.timeout(None) for _ in range(10)]

    async def with_deadline(deadline: asyncio.Timeout) -> Any:
        async with deadline:
            return await rig.run(spec)

    cancelled = [asyncio.create_task(rig.run(spec)) for _ in range(10)]
    timed_out = [asyncio.create_task(with_deadline(d)) for d in deadlines]
    await until(lambda: len(fake.requests) == 20, "all 20 calls at the provider")
    for task in cancelled:
        task.cancel()
    now = asyncio.get_running_loop().time()
    for deadline in deadlines:
        deadline.reschedule(now)  # the deadline passes while the provider works
    results = await asyncio.gather(*cancelled, *timed_out, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results[:10]), results
    assert all(isinstance(r, TimeoutError) for r in results[10:]), results

    async def settled() -> tuple[float, int, int, int]:
        return await ledger(rig)

    async with asyncio.timeout(20):
        while (figures := await settled())[1:] != (20, 20, 0):
            await asyncio.sleep(0.05)
    recorded = figures[0]
    print(
        f"\n20 calls cut short: billed by the fake ${billing.cost():.6f}, recorded ${recorded:.6f}"
    )
    assert recorded >= billing.cost() - 1e-12, "recorded less than the provider billed"
    assert rig.budget.today == pytest.approx(recorded)
    assert rig.budget.reserved == pytest.approx(0)


async def test_a_stream_past_its_max_tokens_is_stopped_and_booked(
    rig_factory: Any, fake: FakeProvider
) -> None:
    # A provider that ignores max_tokens: 400 pieces, and a bill for all of them at the end.
    fake.default = openai_stream(" ".join(["word"] * 400), completion_tokens=400)
    rig = await rig_factory(cloud(fake))
    with pytest.raises(ProviderError) as err:
        await rig.run({"prompt": "Say a few words.", "tier": "cloud", "max_tokens": 50})
    assert err.value.failure == Failure.retryable
    assert "stream stopped past max_tokens" in err.value.message
    [row] = await rig.ledger.store.read(
        lambda c: c.execute("SELECT output_tokens, estimated, in_flight FROM usage").fetchall()
    )
    assert 50 < row["output_tokens"] < 400 and row["estimated"] == 1 and row["in_flight"] == 0
    assert rig.budget.reserved == pytest.approx(0)


def test_a_call_killed_mid_flight_is_booked_when_the_box_starts_again(
    daemons: Any, fake: FakeProvider
) -> None:
    billing = Billing(delay=60.0)  # the first call is still at the provider when the box dies
    fake.answer = billing
    conf = (
        "[local]\nenabled = false\n"
        f"[providers.c]\nkind = 'openai'\nmodel = '{MODEL}'\nbase_url = '{fake.url}/v1'\n" + NO_MQTT
    )
    d = daemons(conf).start()
    d.cli("submit", "--id", "k9", "--tier", "cloud", "--max-tokens", "300", PROMPT)
    wait_for(lambda: len(fake.requests) == 1, 30, what="the call at the provider")
    d.kill9()
    billing.delay = 0.0
    d.start()
    wait_for(lambda: d.task("k9")["state"] == "succeeded", 60, what="the re-run")
    with closing(d.db()) as conn:
        rows = conn.execute(
            "SELECT cost_usd, estimated, in_flight FROM usage WHERE task_id = 'k9' ORDER BY seq"
        ).fetchall()
    recorded = sum(r["cost_usd"] for r in rows)
    print(
        f"\nkill -9 mid-call: {len(fake.requests)} calls billed by the fake"
        f" ${billing.cost():.6f}; {len(rows)} ledger rows, recorded ${recorded:.6f}"
    )
    assert len(rows) == len(fake.requests) == 2
    assert rows[0]["estimated"] == 1 and not any(r["in_flight"] for r in rows)
    assert recorded >= billing.cost() - 1e-12, "recorded less than the provider billed"
    assert "booked at their worst case" in d.log()
    assert d.stop() == 0
