"""Box commands: run the daemon, status, reload, keys, config, console, fleet, doctor."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from agentbox import config, keys
from agentbox.cli import fleet_update
from agentbox.cli.common import (
    EX_FAILED,
    EX_USAGE,
    CliError,
    Parser,
    call,
    load_config,
    local_time,
    print_json,
)
from agentbox.cli.update import update_line
from agentbox.config import EX_CONFIG
from agentbox.control_client import socket_path


def cmd_run(args: argparse.Namespace) -> int:
    from agentbox import daemon  # noqa: PLC0415 (the daemon's imports are not needed elsewhere)

    return daemon.main(args.config)


def cmd_status(args: argparse.Namespace) -> int:
    status = call(args, "status")["status"]
    if args.json:
        print_json(status)
        return 0
    rss = f", {status['rss_mb']} MB" if status.get("rss_mb") is not None else ""
    print(
        f"agentbox {status['version']} on {status['name']} ({status['device_id']}),"
        f" pid {status['pid']}, up {status['uptime_s']} s{rss}"
    )
    for lane, counts in sorted((status.get("queue") or {}).items()) or [("all", {})]:
        print(f"lane {lane}: {counts.get('queued', 0)} queued, {counts.get('running', 0)} running")
    local = status.get("local")
    if local is not None:
        print(
            f"local model: {'loaded' if local['loaded'] else 'not loaded'}"
            f"{', ' + str(local['tokens_per_s']) + ' tokens/s' if local['tokens_per_s'] else ''}"
        )
    schedules = status.get("schedules") or {}
    if schedules.get("next"):
        nxt = schedules["next"]
        print(f"schedules: {schedules['count']}, next {nxt['name']} at {local_time(nxt['at'])}")
    for name, p in (status.get("providers") or {}).items():
        wait = f", retry in {p['retry_in_s']} s" if p["retry_in_s"] else ""
        key = "" if p["key"] or p.get("auth") == "none" else ", no key"
        print(f"provider {name} ({p['kind']}, {p['model']}): {p['state']}{wait}{key}")
    routing = status.get("routing")
    if routing is not None:
        learned = routing["learned"]
        print(
            f"routing: {routing['mode']}, threshold {routing['threshold']:.2f};"
            f" learned from {learned['examples']} example(s) on this box"
            f" ({learned['escalated']} escalated, {learned['pinned_cloud']} pinned cloud,"
            f" {learned['pinned_local']} pinned local)"
        )
    spend = status.get("spend")
    if spend is not None:
        print(
            f"spend: today ${spend['today_usd']:.4f} of ${spend['daily_cap_usd']:.2f},"
            f" month ${spend['month_usd']:.4f} of ${spend['monthly_cap_usd']:.2f}"
        )
    board = status.get("scoreboard")
    if board is not None:
        from agentbox.routing import scoreboard  # noqa: PLC0415 (only this command draws it)

        if not board["rows"]:
            print("scoreboard: no provider calls in the last day")
        for window in scoreboard.WINDOWS if board["rows"] else ():
            lines = scoreboard.table(board, window) + scoreboard.failure_lines(board, window)
            print("\n".join(lines) if lines else f"{scoreboard.WINDOWS[window]}: no calls")
    if status.get("update"):
        print(update_line(status["update"]))
    for part, reason in (status.get("unavailable") or {}).items():
        print(f"{part}: unavailable ({reason})")
    for warning in status.get("config_warnings") or []:
        print(f"warning: {warning}")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    message = call(args, "reload")["message"]
    print(message)
    return 0 if message == "reloaded" else EX_CONFIG


# ---- keys and config -------------------------------------------------------------------


def cmd_keys(args: argparse.Namespace) -> int:
    loaded = load_config(args)
    store = keys.KeyStore(loaded.state_dir)
    kinds = {n: p.kind for n, p in loaded.settings.providers.items()}
    try:
        if args.keys_cmd == "set":
            if sys.stdin.isatty():
                raw = getpass.getpass(f"key for {args.name} (input hidden): ")
            else:
                raw = sys.stdin.read()
            try:
                store.set(args.name, raw)
            except keys.KeyStoreError as exc:  # a bad name or something that cannot be a key
                raise CliError(str(exc), EX_USAGE) from None
            except OSError as exc:
                raise CliError(f"cannot save key {args.name}: {exc.strerror}") from None
            info = keys.describe(store, args.name, kinds.get(args.name))
            print(f"saved key {args.name} (…{info.last4 or '****'}) in {store.dir}")
            if args.name not in kinds and args.name != keys.BROKER_KEY:
                print(
                    f"note: no [providers.{args.name}] section in the configuration yet",
                    file=sys.stderr,
                )
            return 0
        if args.keys_cmd == "test":
            return _test_key(args, loaded, store)
        if args.keys_cmd == "delete":
            try:
                deleted = store.delete(args.name)
            except keys.KeyStoreError as exc:
                raise CliError(str(exc), EX_USAGE) from None
            if not deleted:
                raise CliError(f"no stored key named {args.name!r}")
            print(f"deleted key {args.name}")
            return 0
    except keys.KeyStoreError as exc:
        raise CliError(str(exc)) from None
    names = sorted(set(store.names()) | set(kinds))
    infos = [keys.describe(store, n, kinds.get(n)) for n in names]
    if args.json:
        print_json(
            [{"name": i.name, "source": i.source or None, "last4": i.last4 or None} for i in infos]
        )
        return 0
    if not infos:
        print("no keys; add one with: agentbox keys set PROVIDER")
    for i in infos:
        print(f"{i.name:<16} {i.source or 'missing':<24} {'…' + i.last4 if i.last4 else ''}")
    return 0


def _test_key(args: argparse.Namespace, loaded: config.Loaded, store: keys.KeyStore) -> int:
    import asyncio  # noqa: PLC0415

    from agentbox.routing.pool import test_key  # noqa: PLC0415

    conf = loaded.settings.providers.get(args.name)
    if conf is None:
        raise CliError(f"no [providers.{args.name}] section in the configuration", EX_USAGE)
    key, source = keys.resolve(store, args.name, conf.kind)
    ok, message = asyncio.run(test_key(args.name, conf, key))
    if args.json:
        print_json({"provider": args.name, "ok": ok, "message": message, "key": source or None})
    else:
        print(
            f"{args.name}: {message}" + ("" if source or conf.auth == "none" else " (no key set)")
        )
    return 0 if ok else EX_FAILED


def cmd_config(args: argparse.Namespace) -> int:
    loaded = load_config(args)
    if args.config_cmd == "check":
        for warning in loaded.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(
            f"configuration ok ({loaded.path or 'built-in defaults'}); state dir {loaded.state_dir}"
        )
        return 0
    data = config.redacted(loaded.settings.model_dump(mode="json"))
    data["_source"] = {
        "file": str(loaded.path) if loaded.path else None,
        "state_dir": str(loaded.state_dir),
        "device_id": loaded.device_id,
    }
    if args.json:
        print_json(data)
        return 0
    for section, values in data.items():
        print(f"[{section}]")
        if isinstance(values, dict):
            for key, value in values.items():
                print(f"{key} = {json.dumps(value)}")
        print()
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    from agentbox.console.app import ConsoleApp  # noqa: PLC0415 (textual loads only here)

    ConsoleApp(socket_path(config.default_state_dir())).run()
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from agentbox.fleet import monitor  # noqa: PLC0415 (aiomqtt loads only here)

    if args.wait <= 0:
        raise CliError("--wait must be more than 0 seconds", EX_USAGE)
    loaded = load_config(args)
    fail_on = args.fail_on or loaded.settings.fleet.fail_on
    if not (args.once or args.json) and sys.stdout.isatty():
        from agentbox.fleet.view import FleetView  # noqa: PLC0415 (textual loads only here)

        fleet = monitor.new_fleet(loaded)
        FleetView(fleet, monitor.Feeder(loaded, fleet)).run()
        return 0
    return asyncio.run(
        monitor.watch(loaded, once=args.once, as_json=args.json, wait_s=args.wait, fail_on=fail_on)
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    from agentbox import doctor  # noqa: PLC0415

    loaded = load_config(args)
    checks = doctor.run_checks(loaded, f"ok ({loaded.path or 'built-in defaults'})")
    if args.json:
        print_json([c.to_dict() for c in checks])
    else:
        for c in checks:
            print(f"[{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
            if c.hint:
                print(f"       -> {c.hint}")
    return 0 if all(c.ok for c in checks) else EX_FAILED


def add_parsers(sub: Any) -> None:
    run = sub.add_parser("run", help="run the daemon in the foreground (what systemd runs)")
    run.add_argument(
        "--config", help="TOML file (default $AGENTBOX_CONFIG or /etc/agentbox/agentbox.toml)"
    )
    run.set_defaults(fn=cmd_run)

    st = sub.add_parser("status", help="the running daemon's state")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_status)

    rl = sub.add_parser("reload", help="make the daemon re-read config and keys (like SIGHUP)")
    rl.set_defaults(fn=cmd_reload)

    k = sub.add_parser("keys", help="the key store")
    ksub = k.add_subparsers(dest="keys_cmd", required=True, parser_class=Parser)
    ks = ksub.add_parser("set", help="store a key read from stdin or a hidden prompt")
    ks.add_argument("name", help="provider name (or mqtt, mqtt-hmac)")
    kd = ksub.add_parser("delete", help="remove a key from the key store")
    kd.add_argument("name", help="provider name (or mqtt, mqtt-hmac)")
    kl = ksub.add_parser("list", help="key names and where each comes from; never the key")
    kl.add_argument("--json", action="store_true")
    kt = ksub.add_parser("test", help="check a provider's key with its model listing")
    kt.add_argument("name", help="a [providers.NAME] section")
    kt.add_argument("--json", action="store_true")
    for kp in (ks, kd, kl, kt):
        kp.add_argument("--config")
    k.set_defaults(fn=cmd_keys)

    c = sub.add_parser("config", help="show or check the configuration")
    csub = c.add_subparsers(dest="config_cmd", required=True, parser_class=Parser)
    cs = csub.add_parser("show", help="the effective configuration, secrets redacted")
    cs.add_argument("--json", action="store_true")
    cc = csub.add_parser("check", help="validate; exit 78 with a message when it is bad")
    for cp in (cs, cc):
        cp.add_argument("--config")
    c.set_defaults(fn=cmd_config)

    con = sub.add_parser("console", help="the front panel for tty1 (keys, status)")
    con.set_defaults(fn=cmd_console)

    f = sub.add_parser(
        "fleet", help="every box on the broker: state, load, spend, alerts (live on a terminal)"
    )
    f.add_argument("--once", action="store_true", help="print once and exit (else refresh)")
    f.add_argument("--json", action="store_true")
    f.add_argument(
        "--wait", type=float, default=2.0, help="seconds to listen before printing (default 2)"
    )
    f.add_argument(
        "--fail-on",
        choices=("info", "warning", "critical"),
        help="with --once: exit 1 on an alert this severe or worse (default [fleet] fail_on)",
    )
    f.add_argument("--config", help="TOML file whose [mqtt] section says which broker")
    f.set_defaults(fn=cmd_fleet)
    # `fleet` alone watches; its subcommands (each sets its own fn) register on this.
    fleet_sub = f.add_subparsers(dest="fleet_cmd", metavar="COMMAND", parser_class=Parser)
    fleet_update.add_parser(fleet_sub)

    d = sub.add_parser("doctor", help="check config, state, keys, broker, model and disk")
    d.add_argument("--config")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_doctor)
