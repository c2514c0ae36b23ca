"""Recurring jobs: `agentbox schedules list|set|delete`."""

from __future__ import annotations

import argparse
from typing import Any

from agentbox.cli.common import EX_USAGE, CliError, Parser, call, local_time, print_json, print_list
from agentbox.cli.tasks import spec_arguments, spec_from_args


def cmd_schedules(args: argparse.Namespace) -> int:
    if args.sched_cmd == "delete":
        call(args, "schedule_delete", name=args.name)
        print(f"deleted schedule {args.name}")
        return 0
    if args.sched_cmd == "set":
        if (args.every is None) == (args.cron is None):
            raise CliError("give exactly one of --every SECONDS or --cron EXPR", EX_USAGE)
        timing = {"every_s": args.every} if args.every is not None else {"cron": args.cron}
        task = spec_from_args(args)
        schedule = {"name": args.name, **timing, "missed": args.missed, "task": task}
        reply = call(args, "schedule_set", schedule=schedule)
        if args.json:
            print_json(reply["schedule"])
        else:
            verb = "created" if reply["created"] else "replaced"
            print(
                f"{verb} schedule {args.name}; next run {local_time(reply['schedule']['next_at'])}"
            )
        return 0

    def line(s: dict[str, Any]) -> str:
        when = f"every {s['every_s']:g} s" if "every_s" in s else f"cron {s['cron']}"
        return f"{s['name']:<24} {when:<24} missed={s['missed']:<9} next {local_time(s['next_at'])}"

    print_list(call(args, "schedule_list")["schedules"], args.json, "no schedules", line)
    return 0


def add_parsers(sub: Any) -> None:
    sc = sub.add_parser("schedules", help="recurring jobs: list, set, delete")
    scsub = sc.add_subparsers(dest="sched_cmd", required=True, parser_class=Parser)
    scl = scsub.add_parser("list", help="each schedule and its next run")
    scl.add_argument("--json", action="store_true", help="print a JSON array")
    scs = scsub.add_parser(
        "set",
        help="create or replace a schedule (runs stay on the local model"
        " unless the task pins --tier cloud or a model)",
    )
    scs.add_argument("name", help="letters, digits, '.', '_', '-'; at most 40")
    scs.add_argument("--every", type=float, help="run every this many seconds")
    scs.add_argument("--cron", help="five-field cron expression, the box's local time")
    scs.add_argument(
        "--missed",
        choices=["run_once", "skip"],
        default="run_once",
        help="runs missed while the box was off: run once now (default) or skip; either way"
        " a task records how many were missed",
    )
    spec_arguments(scs, scheduled=True)
    scs.add_argument("--json", action="store_true", help="print the schedule as JSON")
    scd = scsub.add_parser("delete", help="delete a schedule (its finished runs stay)")
    scd.add_argument("name", help="the schedule's name")
    sc.set_defaults(fn=cmd_schedules)
