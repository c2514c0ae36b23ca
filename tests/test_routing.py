"""Routing, failover, breakers and budget with the real pool, store and ledger, and fake clouds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentbox.providers.base import Failure, ProviderError, Request
from agentbox.providers.prices import PriceTable
from agentbox.routing.breaker import AUTH_FAILED, COOLDOWN, OK
from agentbox.routing.budget import Budget, BudgetExceeded
from agentbox.routing.features import WIDTH
from agentbox.routing.learned import BoxLearning
from agentbox.routing.model import LinearModel
from agentbox.routing.router import Router
from agentbox.routing.runner import Outcome
from agentbox.settings import Settings
from agentbox.vocabulary import SpecError, TaskSpec
from tests.conftest import free_port
from tests.fakes import FakeProvider, error, openai_stream


@pytest.fixture
def fakes() -> Iterator[tuple[FakeProvider, FakeProvider]]:
    a, b = FakeProvider(), FakeProvider()
    yield a, b
    a.close()
    b.close()


def two_clouds(a: FakeProvider, b: FakeProvider, **extra: Any) -> dict[str, Any]:
    return {
        "providers": {
            "first": {"kind": "openai", "base_url": f"{a.url}/v1", "model": "gpt-4o-mini"},
            "second": {"kind": "openai", "base_url": f"{b.url}/v1", "model": "gpt-4o-mini"},
        },
        **extra,
    }


async def test_failover_from_a_provider_answering_500s(rig_factory: Any, fakes: Any) -> None:
    a, b = fakes
    a.default = error(500, {"error": {"message": "upstream broke"}})
    b.default = openai_stream("from second", cached=4, reasoning=3)
    rig = await rig_factory(two_clouds(a, b))
    out = await rig.run({"prompt": "hi", "tier": "cloud"})
    assert out.result["output"] == "from second"
    assert out.result["usage"]["cached_tokens"] == 4
    assert out.result["usage"]["reasoning_tokens"] == 3
    assert out.route is not None and out.route.provider == "second"
    assert "failed over from first" in out.route.reason
    for _ in range(2):
        await rig.run({"prompt": "hi", "tier": "cloud"})
    # three failures in a row trip the breaker: the fourth task does not even ask `first`.
    assert rig.pool.breakers["first"].state == COOLDOWN
    asked = len(a.requests)
    await rig.run({"prompt": "hi", "tier": "cloud"})
    assert len(a.requests) == asked
    assert rig.pool.status()["first"]["state"] == COOLDOWN


async def test_auth_failure_marks_the_key_and_is_not_retried(rig_factory: Any, fakes: Any) -> None:
    a, b = fakes
    a.default = error(401, {"error": {"message": "bad key"}})
    b.default = error(401, {"error": {"message": "bad key"}})
    rig = await rig_factory(two_clouds(a, b))
    with pytest.raises(ProviderError) as err:
        await rig.run({"prompt": "hi", "tier": "cloud"})
    assert err.value.failure == Failure.auth
    assert rig.pool.breakers["first"].state == AUTH_FAILED
    assert not rig.pool.available("first")
    a.default = openai_stream("fixed")
    rig.pool.keys["first"] = ("a-new-key-000000", "store")
    rig.pool.configure(rig.settings)  # as a reload does: new key, new chance
    assert rig.pool.breakers["first"].state == OK


async def test_offline_light_work_runs_locally(rig_factory: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    rig = await rig_factory(
        {
            "providers": {"c": {"kind": "openai", "base_url": dead, "model": "gpt-4o-mini"}},
            "routing": {"mode": "quality"},
        }
    )
    out = await rig.run(
        {"prompt": "Analyze and compare two designs step by step.", "max_tokens": 8}
    )
    assert out.route is not None and out.route.tier == "local"
    assert "offline" in out.route.reason
    # a pinned cloud task does not silently become local work
    with pytest.raises(ProviderError) as err:
        await rig.run({"prompt": "hi", "tier": "cloud"})
    assert err.value.failure == Failure.retryable and "connection failed" in err.value.message


async def test_offline_hold_waits_without_using_an_attempt(rig_factory: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    rig = await rig_factory(
        {
            "providers": {"c": {"kind": "openai", "base_url": dead, "model": "m"}},
            "routing": {"offline": "hold"},
        }
    )
    with pytest.raises(ProviderError) as err:
        await rig.run({"prompt": "hi", "tier": "cloud"})
    assert err.value.hold


async def test_fifty_concurrent_tasks_never_overshoot_a_cap_that_pays_for_ten(
    rig_factory: Any, fakes: Any
) -> None:
    a, _ = fakes
    # Each answer uses its whole max_tokens, so a task costs its full reservation.
    a.default = openai_stream("x", prompt_tokens=10, completion_tokens=1000)
    per_task = PriceTable().worst_case("gpt-4o-mini", 0, 1000)  # output part dominates
    cap = per_task * 10.5
    conf = {
        "providers": {
            "only": {"kind": "openai", "base_url": f"{a.url}/v1", "model": "gpt-4o-mini"}
        },
        "budget": {"daily_usd": per_task * 10.5, "monthly_usd": 100, "per_task_usd": 1},
    }
    rig = await rig_factory(conf)
    results = await asyncio.gather(
        *(rig.run({"prompt": "hi", "tier": "cloud", "max_tokens": 1000}) for _ in range(50)),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, Outcome)]
    refused = [r for r in results if isinstance(r, ProviderError) and r.failure == Failure.budget]
    assert len(ok) + len(refused) == 50 and 1 <= len(ok) <= 10
    spent_today, _ = await rig.ledger.totals(rig.budget.day, rig.budget.month)
    assert spent_today <= cap  # never over, not even by one reservation
    assert rig.budget.reserved == pytest.approx(0)
    assert "daily cap" in refused[0].message


async def test_over_budget_auto_work_goes_local(rig_factory: Any, fakes: Any) -> None:
    a, _ = fakes
    conf = {
        "providers": {"only": {"kind": "openai", "base_url": f"{a.url}/v1", "model": "gpt-4o"}},
        "budget": {"daily_usd": 0.0},
        "routing": {"mode": "quality"},
    }
    rig = await rig_factory(conf)
    out = await rig.run(
        {"prompt": "Analyze and compare these plans step by step.", "max_tokens": 8}
    )
    assert out.route is not None and out.route.tier == "local"
    assert out.route.reason.startswith("budget: daily cap")
    assert a.requests == []


async def test_cut_stream_cost_is_booked(rig_factory: Any, fakes: Any) -> None:
    a, b = fakes
    cut = openai_stream(" ".join(["word"] * 40))
    cut.cut_after = 30
    a.push(cut)
    b.default = openai_stream("fine")
    rig = await rig_factory(two_clouds(a, b))
    out = await rig.run({"prompt": "hi", "tier": "cloud"})
    assert out.route is not None and out.route.provider == "second"
    rows = await rig.ledger.store.read(
        lambda c: c.execute(
            "SELECT provider, estimated, output_tokens, cost_usd, in_flight FROM usage"
        ).fetchall()
    )
    # the cut call is booked at once; the answer's cost rides with the task's result, and
    # until that is stored its call stays written down at its worst case
    assert [(r[0], r[1], r[4]) for r in rows] == [("first", 1, 0), ("second", 1, 1)]
    assert rows[0][2] > 0 and rows[0][3] > 0
    assert [b.provider for b in out.bills] == ["second"] and out.bills[0].cost_usd > 0
    assert rows[1][3] >= out.bills[0].cost_usd


async def test_local_answer_failing_the_schema_escalates(rig_factory: Any, fakes: Any) -> None:
    a, _ = fakes
    a.default = openai_stream('{"summary": "from the cloud, long enough for the schema"}')
    rig = await rig_factory(
        {"providers": {"c": {"kind": "openai", "base_url": f"{a.url}/v1", "model": "gpt-4o-mini"}}}
    )
    schema = {
        "type": "object",
        "properties": {"summary": {"type": "string", "minLength": 40}},
        "required": ["summary"],
    }
    # three tokens cannot hold the object: the local answer is cut, the cloud gets the task
    out = await rig.run(
        {"prompt": "Extract a summary: the cat sat.", "schema": schema, "max_tokens": 3}
    )
    assert out.route is not None and out.route.tier == "cloud"
    assert "escalated: the local answer is not valid JSON" in out.route.reason
    assert out.result["data"] == {"summary": "from the cloud, long enough for the schema"}
    assert out.result["usage"]["input_tokens"] > 20  # local and cloud usage together


async def test_background_work_never_moves_to_a_paid_model(rig_factory: Any, fakes: Any) -> None:
    a, _ = fakes
    rig = await rig_factory(
        {
            "providers": {"c": {"kind": "openai", "base_url": f"{a.url}/v1", "model": "gpt-4o"}},
            "routing": {"mode": "quality"},
        }
    )
    out = await rig.run(
        {"prompt": "Analyze this step by step and design a plan.", "max_tokens": 8}, background=True
    )
    assert out.route is not None and out.route.tier == "local" and a.requests == []


def test_budget_reservations_are_atomic_and_settle(tmp_path: Path) -> None:
    class NullLedger:
        async def record(self, entry: Any) -> None:
            return None

        async def withdraw(self, call: str) -> None:
            return None

        async def totals(self, day: str, month: str) -> tuple[float, float]:
            return 0.0, 0.0

        async def spent(self, task_id: str) -> float:
            return 0.0

    budget = Budget(Settings().budget.model_copy(update={"daily_usd": 1.0}), NullLedger())
    r1 = budget.reserve(0.2)
    budget.reserve(0.2)
    with pytest.raises(BudgetExceeded, match="per-task cap"):
        budget.reserve(0.3)
    budget.reserve(0.25)
    budget.reserve(0.25)
    with pytest.raises(BudgetExceeded, match="daily cap"):
        budget.reserve(0.2)
    budget.release(r1)
    budget.reserve(0.2)


ROUTES = [
    ("Say hello in five words.", "local"),
    ("Classify the sentiment of: 'great product'", "local"),
    ("Extract the date from: meet me on March 3rd", "local"),
    ("Translate 'good morning' to French.", "local"),
    ("What is the capital of Italy?", "local"),
    (
        "Analyze the trade-offs between SQLite and Postgres for an edge device, step by step.",
        "cloud",
    ),
    ("Design a migration plan for our billing system and evaluate the risks.", "cloud"),
    ("Write code for a rate limiter in Rust and explain why it is correct.", "cloud"),
    ("Prove that the square root of two is irrational.", "cloud"),
]


@pytest.mark.parametrize(("prompt", "tier"), ROUTES)
def test_auto_routing_in_balanced_mode(prompt: str, tier: str) -> None:
    settings = Settings(providers={"c": {"kind": "openai", "model": "gpt-4o-mini"}})  # type: ignore[dict-item]
    decision = Router(settings).decide(TaskSpec(prompt=prompt))
    assert decision.route.tier == tier, (decision.score, decision.features, decision.route.reason)


def test_modes_move_the_threshold_and_pins_win() -> None:
    # A model that scores every prompt 0.5, with thresholds around it: the mode decides.
    flat = LinearModel([0.0] * WIDTH, 0.0, {"cost": 0.7, "balanced": 0.4, "quality": 0.2})
    spec = TaskSpec(prompt="Summarize the following report and compare it with last year.")
    for mode, tier in (("cost", "local"), ("balanced", "cloud"), ("quality", "cloud")):
        s = Settings(routing={"mode": mode}, providers={"c": {"kind": "openai", "model": "m"}})  # type: ignore[arg-type,dict-item]
        decision = Router(s, learning=BoxLearning(flat)).decide(spec)
        assert decision.route.tier == tier and decision.score == 0.5
    s = Settings(providers={"c": {"kind": "openai", "model": "m", "heavy_model": "big"}})  # type: ignore[dict-item]
    assert Router(s).decide(TaskSpec(prompt="hi", tier="cloud")).route.model == "m"
    assert (
        Router(s).decide(TaskSpec(prompt="hi", model="c/exact-model")).route.model == "exact-model"
    )
    heavy = TaskSpec(
        prompt="Analyze, compare and evaluate the design step by step; prove it.", max_tokens=4000
    )
    assert Router(s).decide(heavy).route.model == "big"
    with pytest.raises(SpecError, match="no cloud provider configured"):
        Router(Settings()).decide(TaskSpec(prompt="hi", tier="cloud"))
    # heavy auto work with no cloud to send it to runs locally, and the reason says why
    alone = Router(Settings()).decide(heavy)
    assert alone.route.tier == "local"
    assert alone.route.reason.startswith("no cloud provider configured; heavy")


def test_at_a_cap_pinned_cloud_work_is_refused_at_intake_and_auto_work_goes_local() -> None:
    s = Settings(providers={"c": {"kind": "openai", "model": "m"}})  # type: ignore[dict-item]
    router = Router(s, spendable=lambda: "daily cap $2.00 reached")
    with pytest.raises(SpecError) as err:
        router.decide(TaskSpec(prompt="hi", tier="cloud"))
    assert err.value.code == "budget_exceeded" and "daily cap" in err.value.message
    heavy = router.decide(TaskSpec(prompt="Analyze and compare the designs step by step."))
    assert heavy.route.tier == "local" and heavy.route.reason.startswith("budget: daily cap")


async def test_a_doubtful_local_answer_escalates_by_token_log_probability(
    rig_factory: Any, fakes: Any
) -> None:
    """Every real answer has a mean log-probability below 0: with the bar at 0 it escalates,
    with the bar at -20 it never does; with no cloud to ask, the local answer stands."""
    a, _ = fakes
    a.default = openai_stream("Paris.")
    cloud = {"c": {"kind": "openai", "base_url": f"{a.url}/v1", "model": "gpt-4o-mini"}}
    task = {"prompt": "What is the capital of France?", "max_tokens": 12}

    strict = await rig_factory({"providers": cloud, "routing": {"unsure_logprob": 0.0}})
    out = await strict.run(task)
    assert out.route is not None and out.route.tier == "cloud"
    assert "escalated: the local answer looks unsure (mean token log-probability -" in (
        out.route.reason
    )
    assert out.result["output"] == "Paris."

    lenient = await rig_factory({"providers": cloud, "routing": {"unsure_logprob": -20.0}})
    out = await lenient.run(task)
    assert out.route is not None and out.route.tier == "local"

    alone = await rig_factory({"routing": {"unsure_logprob": 0.0}})
    out = await alone.run(task)
    assert out.route is not None and out.route.tier == "local" and out.result["output"]
    assert "but no cloud model could take it" in out.route.reason


async def test_the_local_worker_reports_token_log_probabilities(rig_factory: Any) -> None:
    rig = await rig_factory({})
    local = rig.pool.providers["local"]
    c = await local.complete(Request([{"role": "user", "content": "Say hello."}], 16))
    mean, low = c.extra["mean_logprob"], c.extra["min_logprob"]
    assert isinstance(mean, float) and low <= mean < 0
