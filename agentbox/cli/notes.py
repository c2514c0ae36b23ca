"""What agent tasks remember: `agentbox notes list|delete`."""

from __future__ import annotations

import argparse
from typing import Any

from agentbox.cli.common import CliError, Parser, call, local_time, print_list


def cmd_notes(args: argparse.Namespace) -> int:
    if args.notes_cmd == "delete":
        call(args, "notes_delete", key=args.key)
        print(f"deleted note {args.key}")
        return 0
    notes = call(args, "notes_list")["notes"]
    if args.key is not None:
        notes = [n for n in notes if n["key"] == args.key]
        if not notes:
            raise CliError(f"no note named {args.key!r}")
    if args.key is not None and not args.json:
        print(notes[0]["text"])
        return 0

    def line(n: dict[str, Any]) -> str:
        first = n["text"].replace("\n", " ")
        first = first if len(first) <= 60 else first[:59] + "…"
        return f"{n['key']:<24} {local_time(n['updated_at'])}  {n['task_id']:<24} {first}"

    empty = "no notes (agent tasks keep them with the remember tool)"
    print_list(notes, args.json, empty, line)
    return 0


def add_parsers(sub: Any) -> None:
    n = sub.add_parser("notes", help="what agent tasks remembered: list, show, delete")
    nsub = n.add_subparsers(dest="notes_cmd", required=True, parser_class=Parser)
    nl = nsub.add_parser("list", help="every note (key, when, which task, first line)")
    nl.add_argument("key", nargs="?", help="show only this note's whole text")
    nl.add_argument("--json", action="store_true", help="print a JSON array")
    nd = nsub.add_parser("delete", help="forget one note")
    nd.add_argument("key", help="the note's key")
    n.set_defaults(fn=cmd_notes)
