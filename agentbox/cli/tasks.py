"""Task commands: submit, tasks, route, and the task options they share with schedules."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agentbox.agent.names import NAMES as TOOL_NAMES
from agentbox.cli.common import (
    EX_FAILED,
    EX_UNAVAILABLE,
    EX_USAGE,
    CliError,
    Parser,
    connect,
    load_config,
    print_json,
    print_list,
)
from agentbox.control_client import ControlError


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    prompt = "--prompt TEXT" if getattr(args, "sched_cmd", None) else "a PROMPT"
    if args.spec:
        try:
            text = sys.stdin.read() if args.spec == "-" else Path(args.spec).read_text()
            spec = json.loads(text)
        except OSError as exc:
            raise CliError(f"cannot read {args.spec}: {exc.strerror}", EX_USAGE) from None
        except ValueError as exc:
            raise CliError(f"{args.spec}: not JSON: {exc}", EX_USAGE) from None
        if not isinstance(spec, dict):
            raise CliError(f"{args.spec}: a task spec is a JSON object", EX_USAGE)
        if args.prompt:
            raise CliError(f"give either {prompt} or --spec, not both", EX_USAGE)
    else:
        if not args.prompt:
            raise CliError(f"nothing to submit: give {prompt} or --spec FILE", EX_USAGE)
        spec = {"prompt": args.prompt}
    for key in ("id", "tier", "kind", "tools", "max_tokens", "priority", "deadline_s"):
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
    with connect(args, timeout=None if args.wait else 30) as client:
        try:
            reply: dict[str, Any] = {}
            for msg in client.stream("submit", spec=spec, wait=args.wait):
                if msg["type"] == "event":
                    _progress(msg)
                reply = msg
        except ControlError as exc:
            if sys.stderr.isatty():
                sys.stderr.write("\r\x1b[2K")
            if args.json:
                print_json(
                    {
                        "id": spec.get("id"),
                        "state": "rejected",
                        "error": {"code": exc.code, "message": exc.message},
                    }
                )
            raise CliError(f"rejected ({exc.code}): {exc.message}") from None
        finally:
            if args.wait and sys.stderr.isatty():
                sys.stderr.write("\r\x1b[2K")
    task = reply["task"]
    if args.json:
        print_json(task)
    elif not args.wait:
        print(task["id"])
    elif task["state"] == "succeeded":
        print(task["output"])
    else:
        _show_task(task)
    return 0 if task["state"] not in ("failed", "rejected", "expired", "cancelled") else EX_FAILED


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
            op = "get" if args.tasks_cmd == "get" else "cancel"
            task = client.call(op, id=args.id)["task"]
        except ControlError as exc:
            raise CliError(exc.message) from None
    if args.json:
        print_json(task)
    else:
        _show_task(task)
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
        raise CliError(f"{exc.code}: {exc.message}") from None
    except CliError as exc:
        if exc.code != EX_UNAVAILABLE:
            raise
        try:  # no daemon: a dry run on this machine's config, without what the box learned
            decision = Router(load_config(args).settings).decide(parse_spec(spec).with_id())
        except SpecError as err:
            raise CliError(f"{err.code.value}: {err.message}") from None
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
        p.add_argument("prompt", nargs="?", help="the prompt text")
        p.add_argument("--id", help="idempotency key: resubmitting it never runs the task twice")
    p.add_argument("--spec", help="a whole task spec as a JSON file ('-' for stdin)")
    p.add_argument("--tier", choices=["auto", "local", "cloud"])
    p.add_argument("--kind", choices=["complete", "agent"])
    p.add_argument(
        "--tool",
        dest="tools",
        action="append",
        metavar="NAME",
        help="a tool an agent task may call (repeat; default: all): "
        + ", ".join(sorted(TOOL_NAMES)),
    )
    p.add_argument("--max-tokens", dest="max_tokens", type=int)
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
    r.add_argument("--json", action="store_true")
    r.add_argument("--config")
    r.add_argument("--reset", action="store_true", help="forget what this box learned")
    r.set_defaults(fn=cmd_route)

    t = sub.add_parser("tasks", help="list, inspect and cancel tasks")
    tsub = t.add_subparsers(dest="tasks_cmd", required=True, parser_class=Parser)
    tl = tsub.add_parser("list")
    tl.add_argument("--state")
    tl.add_argument("--limit", type=int, default=50)
    tl.add_argument("--json", action="store_true")
    for name in ("get", "cancel"):
        tc = tsub.add_parser(name)
        tc.add_argument("id")
        tc.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_tasks)
