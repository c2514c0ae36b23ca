"""The `agentbox` command line: parses arguments and calls into the modules that do the work."""

from __future__ import annotations

import argparse
import sys

from agentbox import __version__
from agentbox.cli import notes, schedules, schema, system, tasks, update
from agentbox.cli.common import EX_FAILED, EX_INTERRUPTED, CliError, Parser


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="agentbox", description="Runs AI tasks on this box: local model, cloud, MQTT.")
    p.add_argument("--version", action="version", version=f"agentbox {__version__}")
    # Not required: a bare `agentbox` prints the command list (see main).
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", title="commands", parser_class=Parser)
    tasks.add_parsers(sub)
    schedules.add_parsers(sub)
    notes.add_parsers(sub)
    system.add_parsers(sub)
    update.add_parsers(sub)
    schema.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help()
        return 0
    try:
        code: int = args.fn(args)
    except CliError as exc:
        print(f"agentbox: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except BrokenPipeError:
        return EX_FAILED
    return code
