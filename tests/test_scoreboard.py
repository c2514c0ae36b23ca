"""The provider scoreboard: its figures after real tasks against fake providers with injected
failures and delays, in `status`, health and after restarts; failure classes from real
provider errors; honest percentiles; a bounded size however long and however many models."""

from __future__ import annotations

import math
import random
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from agentbox import schemas
from agentbox.providers import registry
from agentbox.providers.base import ProviderError, Request
from agentbox.providers.transport import HttpClient
from agentbox.routing.scoreboard import (
    BUCKET_S,
    DAY_S,
    HOUR_S,
    MAX_KEYS,
    OTHER,
    Call,
    Scoreboard,
    failure_class,
)
from agentbox.settings import ProviderConfig
from agentbox.tasks.scores import StoreScores
from agentbox.tasks.store import Store
from tests.conftest import wait_for
from tests.fakes import FakeProvider, Reply, anthropic_stream, error, gemini_stream, openai_stream
from tests.mqtt_peer import Broker, Peer

MODEL = "gpt-4o-mini"
GAP_S = 0.2  # between the frames of each of b's answers: 5 gaps, at least a second a call
DELAY_S = 0.4  # before a's first answer


def ok_a(delay: float = 0.0) -> Reply:
    reply = openai_stream("fine", prompt_tokens=100, completion_tokens=50)
    reply.delay = delay
    return reply


def box_config(a: FakeProvider, b: FakeProvider, broker_port: int) -> str:
    return (
        "[device]\nid = 'score1'\n[local]\nenabled = false\n"
        f"[mqtt]\nhost = '127.0.0.1'\nport = {broker_port}\nhealth_interval_s = 5\n"
        "[routing]\ncloud_order = ['a', 'b']\n"
        f"[providers.a]\nkind = 'openai'\nmodel = '{MODEL}'\nbase_url = '{a.url}/v1'\n"
        f"[providers.b]\nkind = 'openai'\nmodel = '{MODEL}'\nbase_url = '{b.url}/v1'\n"
    )


def board(d: Any) -> dict[str, Any]:
    """The scoreboard rows of `status --json`, by provider."""
    rows = d.json("status")["scoreboard"]["rows"]
    return {r["provider"]: r for r in rows}


def test_figures_after_tasks_with_failures_and_delays_in_status_health_and_after_restarts(
    daemons: Any, broker: Broker, peers: list[Peer]
) -> None:
    a = FakeProvider()
    slow = openai_stream("alpha beta gamma", prompt_tokens=200, completion_tokens=30)
    slow.gap = GAP_S
    b = FakeProvider(slow)
    cut = openai_stream("one two three four", prompt_tokens=100, completion_tokens=50)
    cut.cut_after = 2  # two words, then the connection closes: billed as sent
    a.push(
        ok_a(DELAY_S),
        error(500, {"error": {"message": "upstream broke"}}),
        ok_a(),
        error(429, {"error": {"message": "slow down"}}),  # no retry-after: no cooldown
        ok_a(),
        cut,
        ok_a(),
        error(401, {"error": {"message": "bad key"}}),  # then a is skipped: auth_failed
    )
    peer = Peer(broker.port)
    peers.append(peer)
    peer.subscribe("agentbox/v1/score1/health")
    try:
        d = daemons(box_config(a, b, broker.port)).start()
        for i in range(9):
            d.cli(
                "submit", "--id", f"t{i}", "--tier", "cloud", "--max-tokens", "64", "--wait", "hi"
            )
        assert [d.task(f"t{i}")["state"] for i in range(9)] == ["succeeded"] * 9
        assert len(a.requests) == 8 and len(b.requests) == 5

        rows = board(d)
        assert set(rows) == {"a", "b"} and rows["a"]["model"] == rows["b"]["model"] == MODEL
        ha, hb = rows["a"]["last_hour"], rows["b"]["last_hour"]
        assert (ha["calls"], ha["answered"], ha["failed"], ha["tasks_succeeded"]) == (8, 4, 4, 4)
        assert ha["failures"] == {"auth": 1, "rate": 1, "server": 1, "cut_off": 1}
        assert (hb["calls"], hb["answered"], hb["failed"], hb["tasks_succeeded"]) == (5, 5, 0, 5)
        assert hb["failures"] == {}
        assert (hb["input_tokens"], hb["output_tokens"]) == (5 * 200, 5 * 30)
        # a's four answers plus what its cut stream sent (its input counted at our bound)
        assert ha["input_tokens"] > 4 * 100 and ha["output_tokens"] == 4 * 50 + 2
        # Latency figures are upper bounds of the true ones: only lower bounds are certain.
        assert ha["total_ms"]["p95"] >= DELAY_S * 1000  # the delayed answer is a's slowest
        assert ha["first_token_ms"]["p95"] >= DELAY_S * 1000
        assert hb["total_ms"]["p50"] >= 5 * GAP_S * 1000
        assert hb["first_token_ms"]["p50"] < hb["total_ms"]["p50"]  # b's first word is at once
        # Cost: what the ledger booked for each provider, and per successful task.
        with closing(d.db()) as conn:
            booked = dict(
                conn.execute("SELECT provider, sum(cost_usd) FROM usage GROUP BY provider")
            )
        for name, hour in (("a", ha), ("b", hb)):
            assert hour["cost_usd"] == pytest.approx(booked[name], abs=1e-6) and booked[name] > 0
            per_task = booked[name] / hour["tasks_succeeded"]
            assert hour["cost_per_task_usd"] == pytest.approx(per_task, rel=1e-4)
        assert rows["a"]["last_day"] == ha and rows["b"]["last_day"] == hb

        text = d.cli("status").stdout
        assert "last hour" in text and "last day" in text
        assert f"a {MODEL}" in text and "failures: auth 1, rate 1, server 1, cut_off 1" in text

        def health_board() -> Any:
            got = peer.on("agentbox/v1/score1/health")
            return got and got[-1][1].get("scoreboard", {}).get(f"b/{MODEL}")

        wait_for(lambda: (health_board() or {}).get("1h", {}).get("calls") == 5, 20, what="health")
        schemas.validate("health", peer.on("agentbox/v1/score1/health")[-1][1])
        health = peer.on("agentbox/v1/score1/health")[-1][1]["scoreboard"]
        assert set(health) == {f"a/{MODEL}", f"b/{MODEL}"}
        short = health[f"a/{MODEL}"]["1h"]
        assert (short["calls"], short["failed"], short["tasks"]) == (8, 4, 4)
        assert short["failures"] == ha["failures"]
        assert short["end_ms"] == [ha["total_ms"]["p50"], ha["total_ms"]["p95"]]
        assert short["tokens"] == [ha["input_tokens"], ha["output_tokens"]]

        # Killed: what the last background write held comes back (it waits for no fsync).
        def stored_calls() -> int:
            with closing(d.db()) as conn:
                (n,) = conn.execute("SELECT coalesce(sum(calls), 0) FROM scoreboard").fetchone()
                return int(n)

        wait_for(lambda: stored_calls() == 13, 20, what="the scoreboard written")
        before = board(d)
        d.kill9()
        d.start()
        assert board(d) == before
        assert d.stop() == 0  # and a clean stop writes it at the end
        d.start()
        assert board(d) == before
        assert d.stop() == 0
    finally:
        a.close()
        b.close()


async def one_failure(kind: str, fake: FakeProvider, client: HttpClient) -> str:
    base = f"{fake.url}/v1" if kind == "openai" else fake.url
    conf = ProviderConfig(kind=kind, base_url=base, model="m")  # type: ignore[arg-type]
    provider = registry.build(kind, conf, lambda: "sk-test-key", client)
    with pytest.raises(ProviderError) as err:
        await provider.complete(Request([{"role": "user", "content": "hi"}], 16))
    return failure_class(err.value)


GEMINI_DAILY = {
    "error": {
        "message": "quota",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"quotaId": "GenerateRequestsPerDayPerProject"}],
            }
        ],
    }
}


@pytest.mark.parametrize(
    ("kind", "reply", "expected"),
    [
        ("openai", error(401, {"error": {"message": "no"}}), "auth"),
        ("openai", error(429, {"error": {"message": "slow"}}), "rate"),
        ("openai", error(503, {"error": {"message": "down"}}), "server"),
        ("openai", error(408, {"error": {"message": "late"}}), "timeout"),
        ("openai", error(400, {"error": {"message": "bad"}}), "bad_request"),
        ("openai", Reply(reset=True), "connection"),
        ("openai", Reply(delay=3.0), "timeout"),  # the client's read timeout is 2 s
        ("anthropic", error(529, {"error": {"type": "overloaded_error"}}), "server"),
        ("anthropic", Reply(events=anthropic_stream("a b c").events, cut_after=4), "cut_off"),
        ("gemini", error(429, GEMINI_DAILY), "quota"),
        ("gemini", Reply(events=gemini_stream("a b c").events, cut_after=1), "cut_off"),
    ],
)
async def test_failure_classes_from_real_provider_errors(
    kind: str, reply: Reply, expected: str, fake: FakeProvider, client: HttpClient
) -> None:
    fake.push(reply)
    assert await one_failure(kind, fake, client) == expected


def test_percentiles_are_never_below_the_truth_and_within_one_bin_above_it() -> None:
    rng = random.Random(7)
    latencies = [rng.lognormvariate(0, 1.2) for _ in range(997)]  # seconds, a long tail
    sb = Scoreboard()
    for s in latencies:
        sb.record(Call("p", "m", total_s=s, first_s=s / 3))
    [row] = sb.summary()["rows"]
    ordered = sorted(latencies)
    for q, name in ((0.5, "p50"), (0.95, "p95")):
        true_ms = ordered[math.ceil(q * len(ordered)) - 1] * 1000
        shown = row["last_hour"]["total_ms"][name]
        assert true_ms <= shown + 0.5 <= true_ms * 1.34 + 1, (name, true_ms, shown)
        first = row["last_hour"]["first_token_ms"][name]
        assert true_ms / 3 <= first + 0.5 <= true_ms / 3 * 1.34 + 1, (name, true_ms, first)
    past = Scoreboard()  # slower than the last bin: the slowest call itself is the bound
    for s in (900.0, 1000.0):
        past.record(Call("p", "m", total_s=s))
    assert past.summary()["rows"][0]["last_hour"]["total_ms"] == {"p50": 1000000, "p95": 1000000}


async def test_size_stays_bounded_over_days_and_models(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    await store.open()
    sb = Scoreboard()
    scores = StoreScores(store, sb)
    start = 1_800_000_000.0
    try:
        # Three days, a call a minute per provider, and tasks naming 50 different models.
        for minute in range(3 * 24 * 60):
            at = start + minute * 60
            for provider in ("a", "b", "c"):
                model = f"model-{minute % 50}" if provider == "c" else "m"
                sb.record(Call(provider, model, total_s=0.5, cost_usd=0.001, at=at))
            if minute % 5 == 0:
                await scores.flush(now=at)
        now = start + 3 * DAY_S
        await scores.flush(now=now)
        keys = {(p, m) for _, p, m in sb.buckets}
        assert len(keys) <= MAX_KEYS + 3 and ("c", OTHER) in keys
        per_day = DAY_S // BUCKET_S + 1
        assert len(sb.buckets) <= per_day * len(keys)
        assert min(at for at, _, _ in sb.buckets) >= now - DAY_S - BUCKET_S

        def rows(c: Any) -> tuple[int, float]:
            return c.execute("SELECT count(*), min(bucket) FROM scoreboard").fetchone()  # type: ignore[no-any-return]

        count, oldest = await store.read(rows)
        assert count <= per_day * len(keys) and oldest >= now - DAY_S - BUCKET_S
        a_day = next(r for r in sb.summary(now)["rows"] if r["provider"] == "a")["last_day"]
        assert 24 * 60 - 5 <= a_day["calls"] <= 24 * 60  # a day's calls, not three days'
    finally:
        await store.close()


async def test_a_provider_failing_most_recent_calls_goes_last_in_the_failover_order(
    rig_factory: Any,
) -> None:
    a, b = FakeProvider(), FakeProvider(openai_stream("from b"))
    broke = error(500, {"error": {"message": "upstream broke"}})
    # Two failures, then an answer, over and over: the breaker (three in a row) never trips.
    a.push(broke, broke, ok_a(), broke, broke)
    a.default = ok_a()
    try:
        rig = await rig_factory(
            {
                "routing": {"cloud_order": ["a", "b"]},
                "providers": {
                    "a": {"kind": "openai", "base_url": f"{a.url}/v1", "model": MODEL},
                    "b": {"kind": "openai", "base_url": f"{b.url}/v1", "model": MODEL},
                },
            }
        )
        for _ in range(5):
            await rig.run({"prompt": "hi", "tier": "cloud"})
        assert len(a.requests) == 5 and rig.pool.breakers["a"].state == "ok"
        assert rig.runner.scoreboard.failing("a") and not rig.runner.scoreboard.failing("b")
        out = await rig.run({"prompt": "hi", "tier": "cloud"})  # a failed 4 of its last 5
        assert len(a.requests) == 5, "a failing provider was still asked first"
        assert out.route is not None and out.route.provider == "b"
    finally:
        a.close()
        b.close()


def test_a_kept_summary_follows_new_calls_past_buckets_and_the_clock() -> None:
    sb = Scoreboard()
    now = 1_800_000_000.0

    def calls(at: float) -> tuple[int, int]:
        [row] = sb.summary(at)["rows"]
        return row["last_hour"]["calls"], row["last_day"]["calls"]

    sb.record(Call("p", "m", 0.1, at=now))
    assert calls(now) == (1, 1)
    sb.record(Call("p", "m", 0.1, at=now))  # the current bucket
    assert calls(now) == (2, 2)
    sb.record(Call("p", "m", 0.1, at=now - 2 * HOUR_S))  # an earlier one
    assert calls(now) == (2, 3)
    assert calls(now + 2 * HOUR_S) == (0, 3)  # buckets close as the clock moves on
    sb.prune(now + DAY_S + HOUR_S)
    assert sb.summary(now + DAY_S + HOUR_S)["rows"] == []
