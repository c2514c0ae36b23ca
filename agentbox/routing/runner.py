"""One attempt of a task: the provider its route names, failover along cloud_order, the budget
reserved before and settled after each call, and local answers verified before they count.

Providers never retry; this loop tries each provider once per attempt and the scheduler spaces
attempts out (backoff, retry-after). That keeps exactly one retry policy in the daemon.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentbox.config import Settings
from agentbox.providers.base import Completion, Failure, Provider, ProviderError, Request
from agentbox.providers.prices import PriceTable
from agentbox.routing.breaker import AUTH_FAILED, QUOTA_EXHAUSTED, Breaker
from agentbox.routing.budget import Budget, BudgetExceeded, UsageEntry
from agentbox.routing.router import LOCAL
from agentbox.tasks.spec import Route, TaskSpec

log = logging.getLogger("agentbox.runner")
Progress = Callable[[dict[str, Any]], Awaitable[None]]
UNSURE = (
    "i don't know",
    "i do not know",
    "i'm not sure",
    "i am not sure",
    "cannot answer",
    "can't answer",
    "as an ai",
)


@dataclass(frozen=True)
class Outcome:
    """A finished run: the result fields of section 5 and the route it took."""

    result: dict[str, Any]
    route: dict[str, Any] | None
    # Spend to store in the same transaction as the result, so the two always agree.
    bills: tuple[UsageEntry, ...] = ()


def input_estimate(spec: TaskSpec) -> int:
    """A generous input token count for reservations: bytes/3 covers English and CJK alike."""
    return sum(len(m["content"].encode()) // 3 + 4 for m in spec.chat()) + 16


def check_output(spec: TaskSpec, c: Completion) -> tuple[Any, str | None]:
    """(parsed data, problem) for a completion against the task's schema."""
    if spec.json_schema is None:
        return None, None
    try:
        data = json.loads(c.text)
    except ValueError:
        cut = " (cut at max_tokens)" if c.finish_reason == "length" else ""
        return None, f"is not valid JSON{cut}"
    import jsonschema  # noqa: PLC0415 (only schema tasks pay for the import)

    try:
        jsonschema.validate(data, spec.json_schema)
    except jsonschema.ValidationError as exc:
        return data, f"does not match the schema: {exc.message[:200]}"
    return data, None


def unsure(c: Completion, below: float) -> str | None:
    """Why a local answer looks unsure (empty, hedging words, low mean token log-probability),
    or None when it looks fine."""
    text = c.text.strip().lower()
    if not text:
        return "is empty"
    if any(p in text for p in UNSURE):
        return "looks unsure (hedging words)"
    mean = c.extra.get("mean_logprob")
    if isinstance(mean, int | float) and mean < below:
        return f"looks unsure (mean token log-probability {mean:.2f} < {below:g})"
    return None


class ProviderRunner:
    def __init__(
        self,
        providers: dict[str, Provider],
        breakers: dict[str, Breaker],
        budget: Budget,
        prices: Callable[[], PriceTable],
        settings: Callable[[], Settings],
    ) -> None:
        self.providers = providers
        self.breakers = breakers
        self.budget = budget
        self.prices = prices
        self.settings = settings

    async def run(
        self,
        spec: TaskSpec,
        route_data: dict[str, Any] | None,
        progress: Progress,
        background: bool = False,
    ) -> Outcome:
        if route_data is None:
            raise ProviderError(Failure.unavailable, "task has no route")
        route = Route.model_validate(route_data)
        auto = spec.tier == "auto" and not spec.model
        if route.tier == LOCAL:
            return await self._local_first(spec, route, progress, escalate=auto and not background)
        return await self._cloud(spec, route, progress, may_go_local=auto and not background)

    # ---- local -------------------------------------------------------------------------

    async def _call_local(self, spec: TaskSpec, progress: Progress) -> Completion:
        local = self.providers.get(LOCAL)
        if local is None or not self.settings().local.enabled:
            raise ProviderError(Failure.unavailable, "the local model is disabled")
        return await local.complete(
            Request(spec.chat(), spec.max_tokens, "", spec.json_schema), progress
        )

    async def _local_first(
        self, spec: TaskSpec, route: Route, progress: Progress, escalate: bool
    ) -> Outcome:
        c = await self._call_local(spec, progress)
        data, problem = check_output(spec, c)
        settings = self.settings()
        doubt = None
        if problem is None and escalate and spec.json_schema is None:
            doubt = unsure(c, settings.routing.unsure_logprob)
        local = route.model_copy(update={"model": c.model})
        if problem is None and doubt is None:
            return self._outcome(spec, local, [c], 0.0, data=data)
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

    async def _cloud(
        self,
        spec: TaskSpec,
        route: Route,
        progress: Progress,
        may_go_local: bool,
        prior: list[Completion] | None = None,
    ) -> Outcome:
        settings = self.settings()
        names = [route.provider]
        if not spec.model:  # a pinned model has nowhere else to go
            names += [n for n in settings.cloud_order() if n != route.provider]
        errors: list[ProviderError] = []
        over_budget = ""
        for name in names:
            provider, breaker = self.providers.get(name), self.breakers.get(name)
            if provider is None or breaker is None:
                continue
            if not breaker.available():
                errors.append(_skipped(breaker))
                continue
            model = route.model if name == route.provider else getattr(provider, "model", "")
            try:
                outcome = await self._call_cloud(
                    spec, provider, breaker, model, progress=progress, prior=prior
                )
            except BudgetExceeded as exc:
                over_budget = str(exc)
                continue
            except ProviderError as exc:
                if exc.failure == Failure.bad_request:
                    raise
                errors.append(exc)
                log.warning("task %s: %s; trying the next provider", spec.id, exc.message)
                continue
            reason = (
                route.reason
                if name == route.provider
                else (f"{route.reason}; failed over from {route.provider}")
            )
            outcome.route["reason"] = reason  # type: ignore[index]
            return outcome
        return await self._nowhere(spec, progress, may_go_local, errors, over_budget)

    async def _call_cloud(
        self,
        spec: TaskSpec,
        provider: Provider,
        breaker: Breaker,
        model: str,
        *,
        progress: Progress,
        prior: list[Completion] | None,
    ) -> Outcome:
        prices = self.prices()
        worst = prices.worst_case(model, input_estimate(spec), spec.max_tokens)
        reservation = self.budget.reserve(worst, spec.max_cost_usd)
        request = Request(spec.chat(), spec.max_tokens, model, spec.json_schema)
        try:
            c = await provider.complete(request, progress)
        except ProviderError as exc:
            if exc.partial is not None:  # a cut stream still costs what it sent
                cost, _ = prices.cost(exc.partial)
                bill = self.budget.book(
                    reservation,
                    exc.partial,
                    cost,
                    estimated=True,
                    provider=provider.name,
                    task_id=spec.id or "",
                )
                await self.budget.ledger.record(bill)
            else:
                self.budget.release(reservation)
            breaker.failure(exc)
            raise
        except BaseException:
            self.budget.release(reservation)
            raise
        cost, estimated = prices.cost(c)
        bill = self.budget.book(
            reservation,
            c,
            cost,
            estimated=estimated,
            provider=provider.name,
            task_id=spec.id or "",
        )
        breaker.success()
        data, problem = check_output(spec, c)
        if problem is not None:
            await self.budget.ledger.record(bill)  # no result to ride with: book it now
            raise ProviderError(Failure.retryable, f"{provider.name}: the answer {problem}")
        route = Route(tier="cloud", provider=provider.name, model=c.model, reason="")
        outcome = self._outcome(
            spec, route, [*(prior or []), c], cost, data=data, estimated=estimated
        )
        return Outcome(outcome.result, outcome.route, (bill,))

    async def _nowhere(
        self,
        spec: TaskSpec,
        progress: Progress,
        may_go_local: bool,
        errors: list[ProviderError],
        over_budget: str,
    ) -> Outcome:
        """No cloud provider took the task: go local if it may, hold, or fail clearly."""
        settings = self.settings()
        if (
            may_go_local
            and settings.local.enabled
            and (over_budget or settings.routing.offline == "local")
        ):
            why = (
                f"budget: {over_budget}" if over_budget else "offline: no cloud provider reachable"
            )
            c = await self._call_local(spec, progress)
            data, problem = check_output(spec, c)
            if problem is not None:
                raise ProviderError(Failure.bad_request, f"the local model's answer {problem}")
            route = Route(tier="local", provider=LOCAL, model=c.model, reason=f"{why}; ran locally")
            return self._outcome(spec, route, [c], 0.0, data=data)
        if over_budget and not errors:
            raise ProviderError(Failure.budget, over_budget)
        if errors and all(e.failure == Failure.auth for e in errors):
            raise ProviderError(Failure.auth, "; ".join(e.message for e in errors))
        waits = [e.retry_after for e in errors if e.retry_after] + [
            b.status()["retry_in_s"] for b in self.breakers.values() if b.status()["retry_in_s"]
        ]
        detail = "; ".join(e.message for e in errors) or "no cloud provider available"
        raise ProviderError(
            Failure.retryable,
            f"no cloud provider could take it: {detail}",
            retry_after=min(waits) if waits else None,
            hold=settings.routing.offline == "hold",
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
        """Result fields for the calls of this attempt; only the last (if any) was paid."""
        usage = {
            "input_tokens": sum(c.input_tokens for c in calls),
            "output_tokens": sum(c.output_tokens for c in calls),
            "cached_tokens": sum(c.cached_tokens for c in calls),
            "reasoning_tokens": sum(c.reasoning_tokens for c in calls),
            "cost_usd": round(cost, 8),
            "estimated": estimated or any(c.estimated for c in calls),
        }
        result: dict[str, Any] = {"output": calls[-1].text, "usage": usage, "error": None}
        if spec.json_schema is not None:
            result["data"] = data
        return Outcome(result, route.model_dump())


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
