"""Task commands: submit, tasks, route, and the task options they share with schedules."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from agentbox.agent.names import NAMES as TOOL_NAMES
from agentbox.cli.common import (
    BAD_INPUT,
    EX_FAILED,
    EX_INTERRUPTED,
    EX_UNAVAILABLE,
    EX_USAGE,
    CliError,
    Parser,
    connect,
    load_config,
    print_json,
    print_list,
    refused,
)
from agentbox.control_client import ControlError

# Final states that mean the task did not do its work.
FINAL_FAILED = frozenset({"failed", "rejected", "expired", "cancelled"})
FINAL_STATES = FINAL_FAILED | {"succeeded"}


def _prompt(args: argparse.Namespace) -> str | None:
    """The prompt argument; `-`, or no prompt and a piped stdin, reads it from stdin."""
    if getattr(args, "sched_cmd", None):
        return str(args.prompt) if args.prompt else None
    if args.prompt == "-" or (args.prompt is None and not args.spec and not sys.stdin.isatty()):
        if args.spec == "-":
            raise CliError("stdin cannot be both the prompt and the --spec", EX_USAGE)
        try:
            text = sys.stdin.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read the prompt from stdin: {exc}", EX_USAGE) from None
        return text if text.strip() else None
    return str(args.prompt) if args.prompt else None


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    prompt = "--prompt TEXT" if getattr(args, "sched_cmd", None) else "a PROMPT ('-' for stdin)"
    text = _prompt(args)
    if args.spec:
        try:
            raw = sys.stdin.read() if args.spec == "-" else Path(args.spec).read_text()
            spec = json.loads(raw)
        except OSError as exc:
            raise CliError(f"cannot read {args.spec}: {exc.strerror}", EX_USAGE) from None
        except ValueError as exc:
            raise CliError(f"{args.spec}: not JSON: {exc}", EX_USAGE) from None
        if not isinstance(spec, dict):
            raise CliError(f"{args.spec}: a task spec is a JSON object", EX_USAGE)
        if text:
            raise CliError(f"give either {prompt} or --spec, not both", EX_USAGE)
    else:
        if not text:
            raise CliError(f"nothing to submit: give {prompt} or --spec FILE", EX_USAGE)
        spec = {"prompt": text}
    if args.model is not None and "/" not in args.model:
        raise CliError(
            f"--model {args.model}: give PROVIDER/MODEL, e.g. openai/gpt-4o-mini"
            " (PROVIDER is a [providers.NAME] section, or local)",
            EX_USAGE,
        )
    for key in ("id", "tier", "kind", "model", "tools", "max_tokens", "priority", "deadline_s"):
        value = getattr(args, key)
        if value is not None:
            spec[key] = value
    if args.schema:
        try:
            spec["schema"] = json.loads(Path(args.schema).read_text())
        except (OSError, ValueError) as exc:
            raise CliError(f"--schema {args.schema}: {exc}", EX_USAGE) from None
    return spec


def _show_task(task: dict[str, Any]) -> None:
    route = task.get("route") or {}
    usage = task.get("usage") or {}
    print(f"id:       {task['id']}")
    print(f"state:    {task['state']}")
    if route:
        print(
            f"route:    {route.get('tier')} / {route.get('provider')} / {route.get('model')}"
            f"  ({route.get('reason')})"
        )
    print(f"attempts: {task.get('attempts', 0)}")
    if usage:
        print(
            f"usage:    {usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out,"
            f" ${usage.get('cost_usd', 0):.4f}"
        )
    if task.get("timings"):
        print("timings:  " + ", ".join(f"{k} {v}" for k, v in task["timings"].items()))
    if task.get("steps"):
        print(f"steps:    {task['steps']}")
    for call in task.get("tool_calls") or []:
        failed = f"  -> error: {call['error']}" if call.get("error") else ""
        print(f"  step {call['step']}: {call['tool']} {call['arguments']}{failed}")
    if task.get("error"):
        print(f"error:    {task['error']['code']}: {task['error']['message']}")
    if task.get("output") is not None:
        print("output:")
        print(task["output"])


def _step(info: dict[str, Any]) -> str:
    if "step" not in info:
        return f"generating: {info.get('output_tokens', 0)} tokens"
    doing = f"calling {info.get('tool')}" if info.get("phase") == "tool" else "thinking"
    return f"step {info['step']}: {doing}"


def _progress(event: dict[str, Any]) -> None:
    if not sys.stderr.isatty():
        return
    task = event["task"]
    route = task.get("route") or {}
    info = task.get("info") or {}
    name = event["event"]
    text = {
        "accepted": f"queued as {task['id']}",
        "known": f"already known as {task['id']} ({task['state']})",
        "running": f"running on {route.get('provider')} (attempt {task.get('attempts')})",
        "progress": _step(info),
        "retry": f"attempt failed, retrying in {info.get('retry_in_s')} s",
    }.get(name, name)
    sys.stderr.write(f"\r\x1b[2K{text}")
    sys.stderr.flush()


def cmd_submit(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    if args.wait and not spec.get("id"):
        spec["id"] = uuid.uuid4().hex[:24]  # so that Ctrl-C can name the task it leaves running
    with connect(args, timeout=None if args.wait else 30) as client:
        try:
            reply: dict[str, Any] = {}
            for msg in client.stream("submit", spec=spec, wait=args.wait):
                if msg["type"] == "event":
                    _progress(msg)
                reply = msg
        except ControlError as exc:
            if args.json:
                print_json(
                    {
                        "id": spec.get("id"),
                        "state": "rejected",
                        "error": {"code": exc.code, "message": exc.message},
                    }
                )
            raise refused(exc, f"rejected ({exc.code}): {exc.message}") from None
        except KeyboardInterrupt:
            _clear_line()
            task_id = spec["id"]
            print(
                f"agentbox: stopped waiting; task {task_id} keeps running"
                f" (agentbox tasks get {task_id}; agentbox tasks cancel {task_id})",
                file=sys.stderr,
            )
            return EX_INTERRUPTED
        finally:
            if args.wait:
                _clear_line()
    task = reply["task"]
    if args.json:
        print_json(task)
    elif not args.wait:
        print(task["id"])
    elif task["state"] == "succeeded":
        print(task["output"])
    else:
        _show_task(task)
    return 0 if task["state"] not in FINAL_FAILED else EX_FAILED


def _clear_line() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[2K")
        sys.stderr.flush()


def _task_line(t: dict[str, Any]) -> str:
    provider = (t.get("route") or {}).get("provider", "-")
    return f"{t['id']:<26} {t['state']:<10} {provider:<10} attempts={t.get('attempts', 0)}"


def cmd_tasks(args: argparse.Namespace) -> int:
    with connect(args) as client:
        try:
            if args.tasks_cmd == "list":
                tasks = client.call("list", state=args.state, limit=args.limit)["tasks"]
                print_list(tasks, args.json, "no tasks", _task_line)
                return 0
            task = client.call(args.tasks_cmd, id=args.id)["task"]
        except ControlError as exc:
            if args.json and args.tasks_cmd != "list":
                print_json({"id": args.id, "error": {"code": exc.code, "message": exc.message}})
            raise refused(exc) from None
    if args.json:
        print_json(task)
    if args.tasks_cmd == "cancel":
        return _cancelled(task, quiet=args.json)
    if not args.json:
        _show_task(task)
    return 0


def _cancelled(task: dict[str, Any], quiet: bool) -> int:
    """What a cancel did: 0 when the task is (or will shortly be) cancelled, 1 when it had
    already finished otherwise, so there was nothing left to cancel."""
    state, task_id = task["state"], task["id"]
    if state in FINAL_STATES and state != "cancelled":
        raise CliError(f"task {task_id} already finished ({state}): nothing to cancel")
    if not quiet:
        print(
            f"cancelling {task_id}: it stops at its next step"
            if state == "running"
            else f"cancelled {task_id}"
        )
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    """Where the router would send a task and why; spends nothing. Asks the running daemon
    (its router knows what this box learned), else decides here from the config."""
    from agentbox.routing.ops import route_view  # noqa: PLC0415
    from agentbox.routing.router import Router  # noqa: PLC0415
    from agentbox.tasks.spec import parse_spec  # noqa: PLC0415
    from agentbox.vocabulary import SpecError  # noqa: PLC0415

    if args.reset:
        with connect(args) as client:
            try:
                forgot = client.call("route_reset")["forgot"]
            except ControlError as exc:
                raise CliError(exc.message) from None
        if args.json:
            print_json(forgot)
        else:
            print(f"forgot what this box learned: {forgot['examples']} example(s)")
        return 0
    spec = spec_from_args(args)
    try:
        with connect(args) as client:
            route = client.call("route", spec=spec)["route"]
    except ControlError as exc:
        raise refused(exc, f"{exc.code}: {exc.message}") from None
    except CliError as exc:
        if exc.code != EX_UNAVAILABLE:
            raise
        try:  # no daemon: a dry run on this machine's config, without what the box learned
            decision = Router(load_config(args).settings).decide(parse_spec(spec).with_id())
        except SpecError as err:
            code = EX_USAGE if err.code.value in BAD_INPUT else EX_FAILED
            raise CliError(f"{err.code.value}: {err.message}", code) from None
        route = route_view(decision, None)
    if args.json:
        print_json(route)
    else:
        print(f"{route['tier']:<6} {route['provider']}/{route['model']}")
        print(f"why:   {route['reason']}")
    return 0


def spec_arguments(p: argparse.ArgumentParser, scheduled: bool = False) -> None:
    """The task options shared by `submit`, `route` and `schedules set` (whose positional
    argument is the schedule's name, so its prompt is an option; its runs get their own ids)."""
    if scheduled:
        p.add_argument("--prompt", help="the prompt text of each run")
        p.set_defaults(id=None)
    else:
        p.add_argument("prompt", nargs="?", help="the prompt text; '-' or a pipe: read from stdin")
        p.add_argument("--id", help="idempotency key: resubmitting it never runs the task twice")
    p.add_argument("--spec", help="a whole task spec as a JSON file ('-' for stdin)")
    p.add_argument("--tier", choices=["auto", "local", "cloud"], help="where it may run")
    p.add_argument(
        "-m",
        "--model",
        metavar="PROVIDER/MODEL",
        help="pin one model, e.g. openai/gpt-4o (no failover to another provider)",
    )
    p.add_argument("--kind", choices=["complete", "agent"], help="agent: it may call tools")
    p.add_argument(
        "--tool",
        dest="tools",
        action="append",
        metavar="NAME",
        help="a tool an agent task may call (repeat; default: all): "
        + ", ".join(sorted(TOOL_NAMES)),
    )
    p.add_argument("--max-tokens", dest="max_tokens", type=int, help="most tokens of output")
    p.add_argument("--priority", type=int, help="0 (lowest) to 9 (highest), default 5")
    p.add_argument("--deadline", dest="deadline_s", type=float, help="seconds until it expires")
    p.add_argument("--schema", help="JSON Schema file the output must satisfy")


def add_parsers(sub: Any) -> None:
    """submit, route and tasks."""
    s = sub.add_parser("submit", help="submit a task to the local daemon")
    spec_arguments(s)
    s.add_argument("--wait", action="store_true", help="wait and print the result")
    s.add_argument("--json", action="store_true", help="print the task as JSON")
    s.set_defaults(fn=cmd_submit)

    r = sub.add_parser("route", help="dry run: where the router would send a task, and why")
    spec_arguments(r)
    r.add_argument("--json", action="store_true", help="print the route as JSON")
    r.add_argument("--config", help="TOML file (default $AGENTBOX_CONFIG or the system file)")
    r.add_argument("--reset", action="store_true", help="forget what this box learned")
    r.set_defaults(fn=cmd_route)

    t = sub.add_parser("tasks", help="list, inspect and cancel tasks")
    tsub = t.add_subparsers(dest="tasks_cmd", required=True, parser_class=Parser)
    tl = tsub.add_parser("list", help="recent tasks, newest first")
    tl.add_argument("--state", help="only tasks in this state (queued, running, succeeded, ...)")
    tl.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    tl.add_argument("--json", action="store_true", help="print a JSON array of tasks")
    for name, what in (
        ("get", "one task: state, route, usage, output (exit 1 if unknown)"),
        ("cancel", "cancel a queued or running task (exit 1 if it had already finished)"),
    ):
        tc = tsub.add_parser(name, help=what)
        tc.add_argument("id", help="the task id")
        tc.add_argument("--json", action="store_true", help="print the task as JSON")
    t.set_defaults(fn=cmd_tasks)
