"""Release commands: `agentbox update FILE|URL`, `agentbox update --request FILE` (root; the
latter run by agentbox-update.service) and `agentbox releases`."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from agentbox import logs
from agentbox.cli.common import CliError, Parser, load_config, local_time, print_json


def _progress(line: str) -> None:
    # An SSH session that drops must not stop a rollback half-way: lines that cannot be
    # written are lost, the update goes on.
    with contextlib.suppress(OSError):
        print(f"update: {line}", file=sys.stderr, flush=True)


def cmd_update(args: argparse.Namespace) -> int:
    from agentbox.update import download, flow  # noqa: PLC0415 (cryptography loads only here)
    from agentbox.update.service import Systemd  # noqa: PLC0415

    if bool(args.file) == bool(args.request):
        raise CliError("give a bundle (FILE or URL) or --request FILE, not both")
    loaded = load_config(args)
    conf = loaded.settings.update
    root = Path(conf.root)
    if not os.access(root if root.exists() else root.parent, os.W_OK):
        raise CliError(f"agentbox update needs root (cannot write {root})")
    box = flow.Box(
        root=root,
        keys_dir=Path(conf.keys_dir),
        state_dir=loaded.state_dir,
        manager=Systemd(conf.unit),
        ready_timeout_s=conf.ready_timeout_s,
        probation_s=conf.probation_s,
        config_args=["--config", str(loaded.path)] if loaded.path else [],
        progress=_progress,
    )
    logs.setup()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if args.request:
        outcome = flow.run_request(Path(args.request), box)
        if outcome is None:
            return 0
    elif download.is_url(args.file):
        outcome = flow.update_url(args.file, args.sha256, box, allow_downgrade=args.allow_downgrade)
    else:
        outcome = flow.update(
            Path(args.file), args.sha256, box, allow_downgrade=args.allow_downgrade
        )
    _journal(outcome)
    if args.json:
        print_json(outcome.to_dict())
    else:
        _print_outcome(outcome)
    return int(outcome.code)


def _journal(o: Any) -> None:
    """The outcome in the system log too (`journalctl -t agentbox-update`), which outlives the
    SSH session that ran the update; without `logger` it is on stderr only."""
    err = f": {o.error}" if o.error else ""
    line = f"update {o.old} -> {o.new}: {o.state}{err}"
    prio = "user.info" if o.code == 0 else "user.err"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            ["logger", "-t", "agentbox-update", "-p", prio, "--", line],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip


def _print_outcome(o: Any) -> None:
    for note in o.notes:
        print(note)
    if o.state in ("succeeded", "current"):
        print(f"release {o.new} is current" + (f" (was {o.old})" if o.old != o.new else ""))
    elif o.state == "refused":
        print(f"refused, nothing changed: {o.error}", file=sys.stderr)
    elif o.state == "rolled_back":
        print(f"update to {o.new} failed and was rolled back; {o.old} is serving: {o.error}")
    else:
        print(f"update to {o.new} {o.state.replace('_', ' ')}: {o.error}", file=sys.stderr)


def cmd_releases(args: argparse.Namespace) -> int:
    from agentbox.update import record  # noqa: PLC0415
    from agentbox.update.releases import Tree  # noqa: PLC0415

    tree = Tree(Path(load_config(args).settings.update.root))
    if args.releases_cmd == "prune":
        if not os.access(tree.releases, os.W_OK):
            raise CliError(f"pruning needs root (cannot write {tree.releases})")
        removed = tree.prune()
        print(f"removed {', '.join(removed)}" if removed else "nothing to prune")
        return 0
    items = tree.listing()
    last = record.read(tree.root)
    if args.json:
        print_json({"root": str(tree.root), "releases": items, "update": last})
        return 0
    if not items:
        print(f"no releases installed under {tree.releases}")
    for r in items:
        mark = "current" if r["current"] else "previous" if r["previous"] else ""
        half = "" if r["complete"] else " (incomplete install)"
        print(f"{r['version']:<20} {mark:<9} {r['path']}{half}")
    if last is not None:
        print(update_line(last))
    return 0


def update_line(last: dict[str, Any]) -> str:
    """The last update in one line, for `releases` and `status`."""
    when = local_time(last["at"]) if isinstance(last.get("at"), int | float) else "?"
    err = f": {last['error']}" if last.get("error") else ""
    return f"last update: {last.get('from')} -> {last.get('to')} {last.get('state')} at {when}{err}"


def add_parsers(sub: Any) -> None:
    u = sub.add_parser(
        "update", help="install a signed release bundle, switch to it, roll back if it fails"
    )
    u.add_argument(
        "file", nargs="?", help="the bundle made by scripts/build-release, or its http(s) URL"
    )
    u.add_argument("--sha256", help="refuse the file unless its sha256 is this")
    u.add_argument(
        "--request", metavar="FILE", help="run the update the daemon spooled (the path unit's)"
    )
    u.add_argument(
        "--allow-downgrade", action="store_true",
        help="install a release older than the current one (never one that cannot open the store)",
    )  # fmt: skip
    u.add_argument("--json", action="store_true", help="print the outcome as JSON")
    u.add_argument("--config")
    u.set_defaults(fn=cmd_update)

    r = sub.add_parser("releases", help="installed releases; which is current and previous")
    rsub = r.add_subparsers(dest="releases_cmd", parser_class=Parser)
    rp = rsub.add_parser("prune", help="remove all but the current and previous releases")
    rp.add_argument("--config")
    r.add_argument("--json", action="store_true")
    r.add_argument("--config")
    r.set_defaults(fn=cmd_releases, releases_cmd=None)
