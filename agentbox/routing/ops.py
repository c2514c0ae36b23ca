"""Control ops of the router: `route` (a dry run on the daemon's router, with what this box
learned) and `route_reset` (forget it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from agentbox.operations import Caller, Empty, Operation, typed_op
from agentbox.routing.learned import BoxLearning
from agentbox.routing.router import Decision, Router
from agentbox.vocabulary import ErrorCode, SpecError, TaskSpec


def route_view(decision: Decision, learning: BoxLearning | None) -> dict[str, Any]:
    """What `agentbox route --json` prints: the route, the model's score and the features that
    weighed most, and what this box learned (None on a dry run without the daemon)."""
    return {
        **decision.route.model_dump(),
        "score": decision.score,
        "threshold": decision.threshold,
        "features": decision.features,
        "learned": learning.state.summary() if learning is not None else None,
    }


@dataclass(frozen=True)
class RouteRequest:
    spec: TaskSpec = field(metadata={"must": "be a task spec object"})


class RouteReply(TypedDict):
    route: dict[str, Any]


class Forgot(TypedDict):
    forgot: dict[str, Any]


def routing_ops(
    router: Callable[[], Router], learning: BoxLearning, parse: Callable[[dict[str, Any]], TaskSpec]
) -> list[Operation[Any, Any]]:
    """`parse` is the intake's spec parser (routing does not import the task modules)."""

    def spec(raw: Any) -> TaskSpec:
        if not isinstance(raw, dict):
            raise SpecError(ErrorCode.invalid_request, "'spec' must be a task spec object")
        return parse(raw).with_id()

    async def route(req: RouteRequest, _: Caller) -> RouteReply:
        return {"route": route_view(router().decide(req.spec), learning)}

    async def reset(_: Empty, __: Caller) -> Forgot:
        return {"forgot": await learning.reset()}

    return [
        typed_op("route", RouteRequest, route, spec=spec),
        typed_op("route_reset", Empty, reset),
    ]
