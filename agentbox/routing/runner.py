"""Runs one attempt of a task on the provider its route names and shapes the result."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentbox.providers.base import Failure, Provider, ProviderError, Request
from agentbox.tasks.spec import Route, TaskSpec

Progress = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Outcome:
    """A finished run: the result fields of section 5 and the route it took."""

    result: dict[str, Any]
    route: dict[str, Any] | None


class ProviderRunner:
    """Looks up the provider by route and calls it once; retries belong to the scheduler."""

    def __init__(self, providers: dict[str, Provider]) -> None:
        self.providers = providers

    async def run(
        self, spec: TaskSpec, route_data: dict[str, Any] | None, progress: Progress
    ) -> Outcome:
        if route_data is None:
            raise ProviderError(Failure.unavailable, "task has no route")
        route = Route.model_validate(route_data)
        provider = self.providers.get(route.provider)
        if provider is None:
            raise ProviderError(
                Failure.unavailable,
                f"provider {route.provider!r} is not available in this version of agentbox",
            )
        model = "" if route.model == "default" else route.model
        completion = await provider.complete(
            Request(spec.chat(), spec.max_tokens, model, spec.json_schema), progress
        )
        result: dict[str, Any] = {
            "output": completion.text,
            "usage": {
                "input_tokens": completion.input_tokens,
                "output_tokens": completion.output_tokens,
                "cost_usd": 0.0,
            },
            "error": None,
        }
        if spec.json_schema is not None:
            try:
                result["data"] = json.loads(completion.text)
            except ValueError:
                raise ProviderError(
                    Failure.retryable, "the model's output is not valid JSON for the schema"
                ) from None
        return Outcome(result, route.model_copy(update={"model": completion.model}).model_dump())
