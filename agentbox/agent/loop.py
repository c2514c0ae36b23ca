"""The agent loop: ask the model, run the tools it calls, give it the results, until it answers.

The loop knows no provider: `step` makes one paid model call (the router's failover and the
budget live there). A retried task starts the loop again from its first message, so tools run
at least once per attempt; the built-in ones read, or replace a note by its key.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agentbox.agent.tools import CATALOG, Context, ToolError
from agentbox.logs import SCRUBBER
from agentbox.providers.base import Completion, Failure, Progress, ProviderError, Tool, ToolCall

log = logging.getLogger("agentbox.agent")
Step = Callable[[list[dict[str, Any]], tuple[Tool, ...]], Awaitable[Completion]]
# What a result keeps of each call: enough to see what the agent did, not a transcript.
TRACE_ARGUMENTS = 300
TRACE_CALLS = 64


@dataclass
class AgentRun:
    """The model calls an agent task made, in order, and the tool calls between them."""

    calls: list[Completion] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)


def _brief(arguments: dict[str, Any]) -> str:
    text = SCRUBBER.scrub(json.dumps(arguments, ensure_ascii=False, separators=(",", ":")))
    return text if len(text) <= TRACE_ARGUMENTS else text[: TRACE_ARGUMENTS - 1] + "…"


async def call_tool(call: ToolCall, allowed: frozenset[str], ctx: Context) -> tuple[str, bool]:
    """(text for the model, ok) for one tool call; a refusal is text, never an exception."""
    entry = CATALOG.get(call.name)
    if entry is None or call.name not in allowed:
        offered = ", ".join(sorted(allowed))
        return f"error: no tool named {call.name!r}; the tools here are: {offered}", False
    try:
        async with asyncio.timeout(ctx.conf.tool_timeout_s):
            return await entry.run(call.arguments, ctx), True
    except ToolError as exc:
        return f"error: {exc}", False
    except TimeoutError:
        return f"error: {call.name} took longer than {ctx.conf.tool_timeout_s:g} s", False


def over_cap(cap: int) -> str:
    return (
        f"error: not run: one answer may call at most {cap} tools (agent.max_tool_calls);"
        " call fewer at a time"
    )


async def run_agent(
    messages: list[dict[str, Any]],
    tools: list[str],
    step: Step,
    ctx: Context,
    progress: Progress,
) -> AgentRun:
    """Run until the model answers without calling a tool, or raise after agent.max_steps."""
    names = tools or sorted(CATALOG)
    offered = tuple(CATALOG[n].tool for n in names)
    allowed = frozenset(names)
    history = list(messages)
    run = AgentRun()
    for number in range(1, ctx.conf.max_steps + 1):
        await progress({"step": number, "phase": "thinking"})
        c = await step(history, offered)
        run.calls.append(c)
        if not c.tool_calls:
            return run
        history.append(
            {
                "role": "assistant",
                "content": c.text,
                "tool_calls": [
                    {"id": t.id, "name": t.name, "arguments": t.arguments} for t in c.tool_calls
                ],
            }
        )
        for i, t in enumerate(c.tool_calls):
            if i < ctx.conf.max_tool_calls:
                await progress({"step": number, "phase": "tool", "tool": t.name})
                text, ok = await call_tool(t, allowed, ctx)
            else:  # every call still gets an answer: the model's API wants one per call id
                text, ok = over_cap(ctx.conf.max_tool_calls), False
            # The result keeps a short error: masked before it is cut (a cut can split a key).
            short = "ok" if ok else SCRUBBER.scrub(text.removeprefix("error: "), limit=193)
            log.debug("agent step %d: %s -> %s", number, t.name, short)
            if len(run.trace) < TRACE_CALLS:
                entry = {"step": number, "tool": t.name, "arguments": _brief(t.arguments)}
                run.trace.append(entry if ok else {**entry, "error": short})
            history.append({"role": "tool", "tool_call_id": t.id, "name": t.name, "content": text})
    raise ProviderError(
        Failure.bad_request,
        f"the agent used its {ctx.conf.max_steps} steps (agent.max_steps) without a final"
        " answer; raise agent.max_steps or narrow the task",
        code="step_limit",
    )
