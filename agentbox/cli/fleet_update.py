"""`agentbox fleet update`: a staged rollout of one release bundle to a pool or named boxes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from agentbox.cli.common import (
    EX_FAILED,
    EX_UNAVAILABLE,
    EX_USAGE,
    CliError,
    load_config,
    print_json,
)


def _say(line: str) -> None:
    with contextlib.suppress(OSError):
        print(f"fleet update: {line}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def serving(path: Path, where: str) -> Iterator[str]:
    """Serve the one file over HTTP on HOST:PORT for the rollout's length; yields its URL."""
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise CliError("--serve must be HOST:PORT", EX_USAGE)
    name = "/" + quote(path.name)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != name:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            with path.open("rb") as fh, contextlib.suppress(OSError):
                while chunk := fh.read(1 << 20):
                    self.wfile.write(chunk)

        def log_message(self, format: str, *args: Any) -> None:
            _say(f"served {self.path} to {self.client_address[0]}: {format % args}")

    try:
        server = http.server.ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
    except OSError as exc:
        raise CliError(f"cannot serve on {where}: {exc.strerror}", EX_UNAVAILABLE) from None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        bound = server.server_address[1]
        yield f"http://{host}:{bound}{name}"
    finally:
        server.shutdown()
        server.server_close()


def cmd_fleet_update(args: argparse.Namespace) -> int:
    from agentbox.fleet.rollout import Plan, RolloutError, roll_out  # noqa: PLC0415
    from agentbox.update import bundle  # noqa: PLC0415 (cryptography loads only here)

    if bool(args.pool) == bool(args.box):
        raise CliError("name the boxes: --pool P or --box ID (repeatable)", EX_USAGE)
    if bool(args.serve) == bool(args.url):
        raise CliError("say where boxes fetch the bundle: --serve HOST:PORT or --url URL", EX_USAGE)
    if args.wave < 1:
        raise CliError("--wave must be at least 1", EX_USAGE)
    path = Path(args.file)
    try:
        manifest, signature = bundle.head(path)
        sha256 = bundle.sha256_file(path)
    except (bundle.BundleError, OSError) as exc:
        raise CliError(f"{path}: {exc}") from None
    loaded = load_config(args)
    _say(f"{path.name}: release {manifest.version} ({manifest.arch}), sha256 {sha256}")
    with serving(path, args.serve) if args.serve else contextlib.nullcontext(args.url) as url:
        plan = Plan(
            prefix=loaded.settings.mqtt.prefix,
            version=manifest.version,
            request={
                "url": url,
                "sha256": sha256,
                "signature": signature,
                "version": manifest.version,
                # Only when asked: a box from before the downgrade rule refuses the field.
                **({"allow_downgrade": True} if args.allow_downgrade else {}),
            },
            pool=args.pool or "",
            boxes=args.box or [],
            wave=args.wave,
            timeout_s=args.timeout,
            progress=_say,
        )
        try:
            summary = asyncio.run(roll_out(loaded, plan))
        except RolloutError as exc:
            raise CliError(str(exc), EX_UNAVAILABLE) from None
    if args.json:
        print_json(summary)
    elif summary["ok"]:
        print(f"release {manifest.version} is serving on {len(summary['boxes'])} box(es)")
    else:
        print(f"rollout of {manifest.version} failed on: {', '.join(summary['failed'])}"
              + (f"; not asked: {', '.join(summary['not_asked'])}" if summary["stopped"] else ""),
              file=sys.stderr)  # fmt: skip
    return 0 if summary["ok"] else EX_FAILED


def add_parser(fleet_sub: Any) -> None:
    """`fleet update`, under the `fleet` command's subcommands."""
    u = fleet_sub.add_parser(
        "update", help="staged rollout of a release bundle: a first wave, then the rest"
    )
    u.add_argument("file", help="the bundle made by scripts/build-release")
    u.add_argument("--pool", help="every box whose info names this pool")
    u.add_argument("--box", action="append", help="a device id (repeatable)")
    u.add_argument("--wave", type=int, default=1, help="boxes in the first wave (default 1)")
    u.add_argument("--serve", metavar="HOST:PORT", help="serve the bundle from this machine")
    u.add_argument("--url", help="where the boxes fetch the bundle (already published)")
    u.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds each box may take (default 1800)"
    )
    u.add_argument(
        "--allow-downgrade", action="store_true",
        help="let boxes on a newer release install this older one (signed with the request)",
    )  # fmt: skip
    u.add_argument("--json", action="store_true", help="print a summary as JSON")
    u.add_argument("--config", help="TOML file whose [mqtt] section says which broker")
    u.set_defaults(fn=cmd_fleet_update)
