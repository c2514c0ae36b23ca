"""Control ops of the router: `route` (a dry run on the daemon's router, with what this box
learned) and `route_reset` (forget it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentbox.routing.learned import BoxLearning
from agentbox.routing.router import Decision, Router
from agentbox.vocabulary import ErrorCode, Op, SpecError, TaskSpec


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


def routing_ops(
    router: Callable[[], Router], learning: BoxLearning, parse: Callable[[dict[str, Any]], TaskSpec]
) -> dict[str, Op]:
    """`parse` is the intake's spec parser (routing does not import the task modules)."""

    async def route(req: dict[str, Any]) -> dict[str, Any]:
        spec = req.get("spec")
        if not isinstance(spec, dict):
            raise SpecError(ErrorCode.invalid_request, "'spec' must be a task spec object")
        parsed = parse(spec).with_id()
        return {"route": route_view(router().decide(parsed), learning)}

    async def reset(req: dict[str, Any]) -> dict[str, Any]:
        return {"forgot": await learning.reset()}

    return {"route": route, "route_reset": reset}
