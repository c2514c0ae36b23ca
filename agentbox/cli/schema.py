"""`agentbox schema`: the JSON Schemas of what the box takes and sends, for integrators."""

from __future__ import annotations

import argparse
import json

from agentbox.cli.common import EX_USAGE, CliError, Parser
from agentbox.schemas import NAMES, load


def cmd_schema(args: argparse.Namespace) -> int:
    if args.name is None:
        for name in NAMES:
            print(f"{name:<10} {load(name)['title']}")
        return 0
    if args.name not in NAMES:
        raise CliError(f"no schema {args.name!r}; one of: {', '.join(NAMES)}", EX_USAGE)
    print(json.dumps(load(args.name), indent=2))
    return 0


def add_parsers(sub: argparse._SubParsersAction[Parser]) -> None:
    s = sub.add_parser(
        "schema",
        help="print the JSON Schema of a task spec, result, event, status, info or health",
        description="Without a name, lists the schemas (docs/reference.md describes each).",
    )
    s.add_argument("name", nargs="?", metavar="NAME", help=f"one of: {', '.join(NAMES)}")
    s.set_defaults(fn=cmd_schema)
