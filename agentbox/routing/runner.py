"""One attempt of a task: the provider its route names, failover along cloud_order, the budget
reserved before and settled after each call, and local answers verified before they count.

Providers never retry; this loop tries each provider once per attempt and the scheduler spaces
attempts out (backoff, retry-after). That keeps exactly one retry policy in the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from agentbox.agent.loop import run_agent
from agentbox.agent.tools import Context, FetchClient, Notes
from agentbox.live import Live
from agentbox.providers.base import Completion, Failure, Provider, ProviderError, Request, Tool
from agentbox.providers.registry import calls_tools
from agentbox.routing.answers import check_output, input_bound, unsure, usage
from agentbox.routing.breaker import AUTH_FAILED, QUOTA_EXHAUSTED, Breaker
from agentbox.routing.budget import Budget, BudgetExceeded, Reservation, usage_entry
from agentbox.routing.router import LOCAL
from agentbox.routing.scoreboard import Call, Scoreboard, Stopwatch, failure_class
from agentbox.vocabulary import Route, TaskSpec, UsageEntry

log = logging.getLogger("agentbox.runner")
Progress = Callable[[dict[str, Any]], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """A finished run: the result fields (docs/reference.md) and the route it took."""

    result: dict[str, Any]
    route: Route | None
    # Spend to store in the same transaction as the result, so the two always agree.
    bills: tuple[UsageEntry, ...] = ()


@dataclass
class NoCloud(Exception):
    """No cloud provider took the call: why each failed, or the budget's refusal."""

    errors: list[ProviderError] = field(default_factory=list)
    over_budget: str = ""


@dataclass(frozen=True)
class Paid:
    """One cloud call that was made and settled against the budget."""

    completion: Completion
    bill: UsageEntry
    cost: float
    estimated: bool
    score: Call  # for the scoreboard, once the caller has judged the answer


class _Overrun(Exception):
    """A stream went past the output its reservation covers; the runner stops it."""

    def __init__(self, output_tokens: int) -> None:
        super().__init__(output_tokens)
        self.output_tokens = output_tokens


class ProviderRunner:
    def __init__(
        self,
        providers: dict[str, Provider],
        breakers: dict[str, Breaker],
        budget: Budget,
        live: Live,
        *,
        http: FetchClient,
        notes: Notes,
        escalated: Callable[[TaskSpec], None] = lambda _: None,
        scoreboard: Scoreboard | None = None,
    ) -> None:
        self.http = http  # what agent tools fetch with
        self.notes = notes  # what they remember
        self.escalated = escalated  # an `auto` task the local model could not answer well
        self.scoreboard = scoreboard or Scoreboard()
        self.providers = providers
        self.breakers = breakers
        self.budget = budget
        self.live = live  # settings and prices as of the last reload
        self._chores: set[asyncio.Task[None]] = set()  # ledger writes of cancelled calls

    async def run(
        self,
        spec: TaskSpec,
        route: Route | None,
        progress: Progress,
        background: bool = False,
    ) -> Outcome:
        task_id = spec.id or ""
        try:
            outcome = await self._run(spec, route, progress, background)
        except BaseException:
            self.scoreboard.task_ended(task_id, succeeded=False)
            raise
        self.scoreboard.task_ended(task_id, succeeded=True)
        return outcome

    async def _run(
        self,
        spec: TaskSpec,
        route: Route | None,
        progress: Progress,
        background: bool,
    ) -> Outcome:
        if route is None:
            raise ProviderError(Failure.unavailable, "task has no route")
        auto = spec.tier == "auto" and not spec.model
        if spec.kind == "agent":
            return await self._agent(spec, route, progress)
        if route.tier == LOCAL:
            return await self._local_first(spec, route, progress, escalate=auto and not background)
        return await self._cloud(spec, route, progress, may_go_local=auto and not background)

    # ---- local -------------------------------------------------------------------------

    async def _call_local(
        self, spec: TaskSpec, progress: Progress
    ) -> tuple[Completion, Any, str | None]:
        """The local model's answer, its data and what is wrong with it against the schema."""
        local = self.providers.get(LOCAL)
        if local is None or not self.live.settings.local.enabled:
            raise ProviderError(Failure.unavailable, "the local model is disabled")
        clock = Stopwatch()

        async def timed(info: dict[str, Any]) -> None:
            if not clock.first_piece(info):
                await progress(info)

        def score(failure: str | None, c: Completion | None = None) -> None:
            model = getattr(local, "model", "")
            call = clock.call(LOCAL, model, failure=failure, completion=c)
            self.scoreboard.record(call, spec.id or "")

        request = Request(spec.chat(), spec.max_tokens, "", spec.json_schema)
        try:
            c = await local.complete(request, timed)
        except ProviderError as exc:
            score(failure_class(exc))
            raise
        except asyncio.CancelledError:
            score("cancelled")
            raise
        data, problem = check_output(spec, c)
        score("bad_response" if problem else None, c)
        return c, data, problem

    async def _local_first(
        self, spec: TaskSpec, route: Route, progress: Progress, escalate: bool
    ) -> Outcome:
        c, data, problem = await self._call_local(spec, progress)
        settings = self.live.settings
        doubt = None
        if problem is None and escalate and spec.json_schema is None:
            doubt = unsure(c, settings.routing.unsure_logprob)
        local = route.model_copy(update={"model": c.model})
        if problem is None and doubt is None:
            return self._outcome(spec, local, [c], 0.0, data=data)
        if escalate:
            self.escalated(spec)  # a labeled example for this box: that kind of prompt is heavy
        if escalate and settings.providers:
            order = settings.cloud_order()
            name = next((n for n in order if self.breakers[n].available()), order[0])
            cloud = Route(
                tier="cloud",
                provider=name,
                model=settings.providers[name].model,
                reason=f"{route.reason}; escalated: the local answer {problem or doubt}",
            )
            try:
                return await self._cloud(spec, cloud, progress, may_go_local=False, prior=[c])
            except ProviderError as exc:
                log.warning("task %s: escalation failed: %s", spec.id, exc.message)
        if problem is None:  # only doubtful: with no cloud to ask, the local answer stands
            kept = f"{route.reason}; the answer {doubt}, but no cloud model could take it"
            return self._outcome(
                spec, local.model_copy(update={"reason": kept}), [c], 0.0, data=None
            )
        raise ProviderError(Failure.bad_request, f"the local model's answer {problem}")

    # ---- cloud -------------------------------------------------------------------------

    async def _each_provider(
        self, spec: TaskSpec, route: Route, call: Callable[[Provider, Breaker, str], Awaitable[T]]
    ) -> tuple[T, str]:
        """`call` on the route's provider, then along cloud_order (unless the task pins its
        model) until one answers; raises NoCloud when none did."""
        settings = self.live.settings
        names = [route.provider]
        if not spec.model:  # a pinned model has nowhere else to go
            tools = spec.kind == "agent"  # only to providers that can call its tools
            names += [
                n
                for n in settings.cloud_order()
                if n != route.provider and (not tools or calls_tools(settings, n))
            ]
            names.sort(key=self.scoreboard.failing)  # stable: the failing ones go last
        failed = NoCloud()
        for name in names:
            provider, breaker = self.providers.get(name), self.breakers.get(name)
            if provider is None or breaker is None:
                continue
            if not breaker.available():
                failed.errors.append(_skipped(breaker))
                continue
            model = route.model if name == route.provider else getattr(provider, "model", "")
            try:
                return await call(provider, breaker, model), name
            except BudgetExceeded as exc:
                failed.over_budget = str(exc)
            except ProviderError as exc:
                if exc.failure == Failure.bad_request:
                    raise
                failed.errors.append(exc)
                log.warning("task %s: %s; trying the next provider", spec.id, exc.message)
        raise failed

    @staticmethod
    def _reason(route: Route, name: str) -> str:
        if name == route.provider:
            return route.reason
        return f"{route.reason}; failed over from {route.provider}"

    async def _cloud(
        self,
        spec: TaskSpec,
        route: Route,
        progress: Progress,
        may_go_local: bool,
        prior: list[Completion] | None = None,
    ) -> Outcome:
        async def call(provider: Provider, breaker: Breaker, model: str) -> Outcome:
            request = Request(spec.chat(), spec.max_tokens, model, spec.json_schema)
            paid = await self._paid(
                spec, provider, breaker, request, progress, task_cap=spec.max_cost_usd
            )
            c = paid.completion
            data, problem = check_output(spec, c)
            self.scoreboard.record(
                replace(paid.score, failure="bad_response") if problem else paid.score,
                spec.id or "",
            )
            if problem is not None:
                await self.budget.ledger.record(paid.bill)  # no result to ride with: book it now
                raise ProviderError(Failure.retryable, f"{provider.name}: the answer {problem}")
            used = Route(tier="cloud", provider=provider.name, model=c.model, reason="")
            calls = [*(prior or []), c]
            outcome = self._outcome(
                spec, used, calls, paid.cost, data=data, estimated=paid.estimated
            )
            return Outcome(outcome.result, outcome.route, (paid.bill,))

        try:
            outcome, name = await self._each_provider(spec, route, call)
        except NoCloud as exc:
            return await self._nowhere(spec, progress, may_go_local, exc)
        assert outcome.route is not None  # call() always says which provider answered
        return replace(
            outcome, route=outcome.route.model_copy(update={"reason": self._reason(route, name)})
        )

    async def _paid(
        self,
        spec: TaskSpec,
        provider: Provider,
        breaker: Breaker,
        request: Request,
        progress: Progress,
        *,
        task_cap: float | None,
    ) -> Paid:
        """One call: its worst case reserved and written down before the request leaves, the
        real cost booked after; a call cut short is booked at what it may have cost."""
        prices = self.live.prices
        bound = input_bound(request)
        worst = prices.worst_case(request.model, bound, request.max_tokens, provider.name)
        reservation = self.budget.reserve(worst, task_cap)
        name, task_id = provider.name, spec.id or ""
        worst_call = Completion("", request.model, bound, request.max_tokens, estimated=True)
        clock = Stopwatch()

        def book(c: Completion, cost: float, estimated: bool) -> UsageEntry:
            return self.budget.book(
                reservation, c, cost, estimated=estimated, provider=name, task_id=task_id
            )

        def score(failure: str, c: Completion | None = None, cost: float = 0.0) -> None:
            call = clock.call(name, request.model, failure=failure, completion=c, cost=cost)
            self.scoreboard.record(call, task_id)

        async def watched(info: dict[str, Any]) -> None:
            if clock.first_piece(info):
                return
            out = info.get("output_tokens")
            if isinstance(out, int) and out > request.max_tokens:
                raise _Overrun(out)  # the provider ignores max_tokens: stop paying for it
            await progress(info)

        await self._in_flight(reservation, worst_call, name, task_id)
        try:
            c = await provider.complete(request, watched)
        except ProviderError as exc:
            if exc.partial is not None:  # a cut stream still costs what it sent
                cut = exc.partial
                if cut.estimated:  # no usage from the server: its input counted as our bound
                    cut = replace(cut, input_tokens=max(cut.input_tokens, bound))
                cut_cost = prices.cost(cut, name)[0]
                score(failure_class(exc), cut, cut_cost)
                await self.budget.ledger.record(book(cut, cut_cost, True))
            else:  # refused before it started (an error status, no connection): not billed
                score(failure_class(exc))
                self.budget.release(reservation)
                await self._withdraw(reservation.call)
            breaker.failure(exc)
            raise
        except _Overrun as over:
            c = replace(worst_call, output_tokens=over.output_tokens)
            over_cost = prices.cost(c, name)[0]
            score("bad_response", c, over_cost)
            await self.budget.ledger.record(book(c, over_cost, True))
            err = ProviderError(
                Failure.retryable,
                f"{name}: stream stopped past max_tokens"
                f" ({over.output_tokens} > {request.max_tokens})",
            )
            breaker.failure(err)
            raise err from None
        except BaseException:
            # Cancelled or past its deadline while the provider worked: it may have billed
            # the whole call. Booked in memory now; the write must outlive this cancelled task.
            score("cancelled", cost=worst)
            self._later(self.budget.ledger.record(book(worst_call, worst, True)))
            raise
        cost, estimated = prices.cost(c, name)
        if cost > worst:
            log.warning(
                "task %s: %s billed $%.6f, over its reservation $%.6f", task_id, name, cost, worst
            )
        bill = book(c, cost, estimated)
        breaker.success()
        return Paid(
            c, bill, cost, estimated, clock.call(name, request.model, completion=c, cost=cost)
        )

    async def _in_flight(
        self, reservation: Reservation, worst_call: Completion, provider: str, task_id: str
    ) -> None:
        """Write the call down at its worst case before it leaves the box: a crash or a full
        disk after it was sent must not lose what it may have cost."""
        row = usage_entry(
            worst_call,
            at=time.time(),
            task_id=task_id,
            provider=provider,
            cost=reservation.amount,
            estimated=True,
            call=reservation.call,
            in_flight=True,
        )
        try:
            await self.budget.ledger.record(row)
        except asyncio.CancelledError:
            self.budget.release(reservation)
            self._later(self.budget.ledger.withdraw(reservation.call))  # queued behind it
            raise
        except Exception as exc:
            self.budget.release(reservation)
            raise ProviderError(
                Failure.retryable, f"{provider}: not called, it could not be recorded first: {exc}"
            ) from None

    async def _withdraw(self, call: str) -> None:
        try:
            await self.budget.ledger.withdraw(call)
        except Exception as exc:  # the row stays, at its worst case: too much, never too little
            log.error("ledger write failed: %s", exc)

    def _later(self, write: Coroutine[Any, Any, None]) -> None:
        """A ledger write that must happen although its caller is being cancelled."""
        task = asyncio.ensure_future(write)
        self._chores.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._chores.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("ledger write failed: %s", t.exception())

        task.add_done_callback(done)

    # ---- agent -------------------------------------------------------------------------

    async def _agent(self, spec: TaskSpec, route: Route, progress: Progress) -> Outcome:
        """Every step is one cloud call with failover; each is booked as soon as it is made,
        and all of them, over all the task's attempts, stay within the task's cap."""
        settings = self.live.settings
        cap = settings.budget.per_task_usd
        if spec.max_cost_usd is not None:
            cap = min(cap, spec.max_cost_usd)
        cap -= await self.budget.ledger.spent(spec.id or "")
        spent: list[Paid] = []
        last = [route.provider]

        async def step(messages: list[dict[str, Any]], tools: tuple[Tool, ...]) -> Completion:
            async def call(provider: Provider, breaker: Breaker, model: str) -> Paid:
                request = Request(messages, spec.max_tokens, model, spec.json_schema, tools)
                left = max(cap - sum(p.cost for p in spent), 0.0)
                return await self._paid(spec, provider, breaker, request, progress, task_cap=left)

            try:
                paid, last[0] = await self._each_provider(spec, route, call)
            except NoCloud as exc:
                raise self._unavailable(exc) from None
            self.scoreboard.record(paid.score, spec.id or "")
            spent.append(paid)
            await self.budget.ledger.record(paid.bill)
            return paid.completion

        ctx = Context(settings.agent, self.http, self.notes, spec.id or "")
        try:
            run = await run_agent(spec.chat(), spec.tools, step, ctx, progress)
            final = run.calls[-1]
            data, problem = check_output(spec, final)
            if problem is not None:
                raise ProviderError(Failure.retryable, f"{last[0]}: the final answer {problem}")
        except ProviderError as exc:
            if spent:  # a failed task still shows what it spent, as a succeeded one does
                calls, cost = [p.completion for p in spent], sum(p.cost for p in spent)
                exc.usage = usage(calls, cost, any(p.estimated for p in spent))
            raise
        reason = self._reason(route, last[0])
        used = Route(tier="cloud", provider=last[0], model=final.model, reason=reason)
        outcome = self._outcome(
            spec,
            used,
            run.calls,
            sum(p.cost for p in spent),
            data=data,
            estimated=any(p.estimated for p in spent),
        )
        outcome.result["steps"] = len(run.calls)
        outcome.result["tool_calls"] = run.trace
        return outcome

    async def _nowhere(
        self,
        spec: TaskSpec,
        progress: Progress,
        may_go_local: bool,
        failed: NoCloud,
    ) -> Outcome:
        """No cloud provider took the task: go local if it may, hold, or fail clearly."""
        settings = self.live.settings
        over_budget = failed.over_budget
        if (
            may_go_local
            and settings.local.enabled
            and (over_budget or settings.routing.offline == "local")
        ):
            why = (
                f"budget: {over_budget}" if over_budget else "offline: no cloud provider reachable"
            )
            c, data, problem = await self._call_local(spec, progress)
            if problem is not None:
                raise ProviderError(Failure.bad_request, f"the local model's answer {problem}")
            route = Route(tier="local", provider=LOCAL, model=c.model, reason=f"{why}; ran locally")
            return self._outcome(spec, route, [c], 0.0, data=data)
        raise self._unavailable(failed)

    def _unavailable(self, failed: NoCloud) -> ProviderError:
        """The one failure to report when no cloud provider took a call."""
        errors = failed.errors
        if failed.over_budget and not errors:
            return ProviderError(Failure.budget, failed.over_budget)
        if errors and all(e.failure == Failure.auth for e in errors):
            return ProviderError(Failure.auth, "; ".join(e.message for e in errors))
        waits = [e.retry_after for e in errors if e.retry_after] + [
            b.status()["retry_in_s"] for b in self.breakers.values() if b.status()["retry_in_s"]
        ]
        detail = "; ".join(e.message for e in errors) or "no cloud provider available"
        return ProviderError(
            Failure.retryable,
            f"no cloud provider could take it: {detail}",
            retry_after=min(waits) if waits else None,
            hold=self.live.settings.routing.offline == "hold",
        )

    def _outcome(
        self,
        spec: TaskSpec,
        route: Route,
        calls: list[Completion],
        cost: float,
        *,
        data: Any,
        estimated: bool = False,
    ) -> Outcome:
        """Result fields for the calls of this attempt; `cost` is what they cost together."""
        spent = usage(calls, cost, estimated)
        result: dict[str, Any] = {"output": calls[-1].text, "usage": spent, "error": None}
        if spec.json_schema is not None:
            result["data"] = data
        return Outcome(result, route)


def _skipped(breaker: Breaker) -> ProviderError:
    status = breaker.status()
    failure = {AUTH_FAILED: Failure.auth, QUOTA_EXHAUSTED: Failure.quota}.get(
        breaker.state, Failure.retryable
    )
    return ProviderError(
        failure,
        f"{breaker.name}: {breaker.state} ({status['last_error'] or 'no detail'})",
        retry_after=status["retry_in_s"] or None,
    )
