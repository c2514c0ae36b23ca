"""The `agentbox` command line: parses arguments and calls into the modules that do the work."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from agentbox import __version__, config, keys
from agentbox.config import EX_CONFIG, ConfigError
from agentbox.control import ControlClient, ControlError, socket_path

EX_USAGE = 2
EX_UNAVAILABLE = 69
EX_FAILED = 1


class CliError(Exception):
    def __init__(self, message: str, code: int = EX_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _loaded(args: argparse.Namespace) -> config.Loaded:
    try:
        return config.load(getattr(args, "config", None))
    except ConfigError as exc:
        raise CliError(f"bad configuration: {exc}", EX_CONFIG) from None


def _client(args: argparse.Namespace, timeout: float | None = 10.0) -> ControlClient:
    try:
        return ControlClient(socket_path(config.default_state_dir()), timeout)
    except ControlError as exc:
        raise CliError(exc.message, EX_UNAVAILABLE) from None


def _call(args: argparse.Namespace, op: str, **params: Any) -> dict[str, Any]:
    """One request to the daemon; its errors become CLI errors."""
    with _client(args) as client:
        try:
            return client.call(op, **params)
        except ControlError as exc:
            raise CliError(exc.message) from None


# ---- run ---------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from agentbox import daemon  # noqa: PLC0415 (the daemon's imports are not needed elsewhere)

    return daemon.main(args.config)


# ---- tasks -------------------------------------------------------------------------------


def _spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
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
    spec = _spec_from_args(args)
    with _client(args, timeout=None if args.wait else 30) as client:
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
                _print_json(
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
        _print_json(task)
    elif not args.wait:
        print(task["id"])
    elif task["state"] == "succeeded":
        print(task["output"])
    else:
        _show_task(task)
    return 0 if task["state"] not in ("failed", "rejected", "expired", "cancelled") else EX_FAILED


def cmd_tasks(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            if args.tasks_cmd == "list":
                tasks = client.call("list", state=args.state, limit=args.limit)["tasks"]
                if args.json:
                    _print_json(tasks)
                    return 0
                if not tasks:
                    print("no tasks")
                for t in tasks:
                    route = t.get("route") or {}
                    print(
                        f"{t['id']:<26} {t['state']:<10} {route.get('provider', '-'):<10}"
                        f" attempts={t.get('attempts', 0)}"
                    )
                return 0
            op = "get" if args.tasks_cmd == "get" else "cancel"
            task = client.call(op, id=args.id)["task"]
        except ControlError as exc:
            raise CliError(exc.message) from None
    if args.json:
        _print_json(task)
    else:
        _show_task(task)
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    if args.sched_cmd == "delete":
        _call(args, "schedule_delete", name=args.name)
        print(f"deleted schedule {args.name}")
        return 0
    if args.sched_cmd == "set":
        if (args.every is None) == (args.cron is None):
            raise CliError("give exactly one of --every SECONDS or --cron EXPR", EX_USAGE)
        timing = {"every_s": args.every} if args.every is not None else {"cron": args.cron}
        task = _spec_from_args(args)
        schedule = {"name": args.name, **timing, "missed": args.missed, "task": task}
        reply = _call(args, "schedule_set", schedule=schedule)
        if args.json:
            _print_json(reply["schedule"])
        else:
            verb = "created" if reply["created"] else "replaced"
            print(f"{verb} schedule {args.name}; next run {_local(reply['schedule']['next_at'])}")
        return 0
    items = _call(args, "schedule_list")["schedules"]
    if args.json:
        _print_json(items)
        return 0
    if not items:
        print("no schedules")
    for s in items:
        when = f"every {s['every_s']:g} s" if "every_s" in s else f"cron {s['cron']}"
        print(f"{s['name']:<24} {when:<24} missed={s['missed']:<9} next {_local(s['next_at'])}")
    return 0


def _local(t: float) -> str:
    return datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds")


def cmd_route(args: argparse.Namespace) -> int:
    """Dry run of the router on this machine's config: spends nothing, needs no daemon."""
    from agentbox.routing.router import Router  # noqa: PLC0415
    from agentbox.tasks.spec import SpecError, parse_spec  # noqa: PLC0415

    loaded = _loaded(args)
    try:
        spec = parse_spec(_spec_from_args(args)).with_id()
        decision = Router(loaded.settings).decide(spec)
    except SpecError as exc:
        raise CliError(f"{exc.code.value}: {exc.message}") from None
    route = {**decision.route.model_dump(), "score": decision.score}
    if args.json:
        _print_json(route)
    else:
        print(f"{route['tier']:<6} {route['provider']}/{route['model']}")
        print(f"why:   {route['reason']}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = _call(args, "status")["status"]
    if args.json:
        _print_json(status)
        return 0
    local = status["local"]
    print(
        f"agentbox {status['version']} on {status['name']} ({status['device_id']}),"
        f" pid {status['pid']}, up {status['uptime_s']} s, {status['rss_mb']} MB"
    )
    for lane, counts in sorted(status["queue"].items()) or [("all", {})]:
        print(f"lane {lane}: {counts.get('queued', 0)} queued, {counts.get('running', 0)} running")
    print(
        f"local model: {'loaded' if local['loaded'] else 'not loaded'}"
        f"{', ' + str(local['tokens_per_s']) + ' tokens/s' if local['tokens_per_s'] else ''}"
    )
    schedules = status.get("schedules") or {}
    if schedules.get("next"):
        nxt = schedules["next"]
        print(f"schedules: {schedules['count']}, next {nxt['name']} at {_local(nxt['at'])}")
    for name, p in status["providers"].items():
        wait = f", retry in {p['retry_in_s']} s" if p["retry_in_s"] else ""
        key = "" if p["key"] else ", no key"
        print(f"provider {name} ({p['kind']}, {p['model']}): {p['state']}{wait}{key}")
    spend = status["spend"]
    print(
        f"spend: today ${spend['today_usd']:.4f} of ${spend['daily_cap_usd']:.2f},"
        f" month ${spend['month_usd']:.4f} of ${spend['monthly_cap_usd']:.2f}"
    )
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    message = _call(args, "reload")["message"]
    print(message)
    return 0 if message == "reloaded" else EX_CONFIG


# ---- keys and config -------------------------------------------------------------------


def cmd_keys(args: argparse.Namespace) -> int:
    loaded = _loaded(args)
    store = keys.KeyStore(loaded.state_dir)
    kinds = {n: p.kind for n, p in loaded.settings.providers.items()}
    try:
        if args.keys_cmd == "set":
            if sys.stdin.isatty():
                raw = getpass.getpass(f"key for {args.name} (input hidden): ")
            else:
                raw = sys.stdin.read()
            store.set(args.name, raw)
            info = keys.describe(store, args.name, kinds.get(args.name))
            print(f"saved key {args.name} (…{info.last4 or '****'}) in {store.dir}")
            if args.name not in kinds and args.name != "mqtt":
                print(
                    f"note: no [providers.{args.name}] section in the configuration yet",
                    file=sys.stderr,
                )
            return 0
        if args.keys_cmd == "test":
            return _test_key(args, loaded, store)
        if args.keys_cmd == "delete":
            if not store.delete(args.name):
                raise CliError(f"no stored key named {args.name!r}")
            print(f"deleted key {args.name}")
            return 0
    except keys.KeyError_ as exc:
        raise CliError(str(exc)) from None
    names = sorted(set(store.names()) | set(kinds))
    infos = [keys.describe(store, n, kinds.get(n)) for n in names]
    if args.json:
        _print_json(
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
        _print_json({"provider": args.name, "ok": ok, "message": message, "key": source or None})
    else:
        print(f"{args.name}: {message}" + ("" if source else " (no key set)"))
    return 0 if ok else EX_FAILED


def cmd_config(args: argparse.Namespace) -> int:
    loaded = _loaded(args)
    if args.config_cmd == "check":
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
        _print_json(data)
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

    from agentbox.fleet.monitor import watch  # noqa: PLC0415

    if args.wait <= 0:
        raise CliError("--wait must be more than 0 seconds", EX_USAGE)
    return asyncio.run(watch(_loaded(args), args.once, args.json, args.wait))


def cmd_doctor(args: argparse.Namespace) -> int:
    from agentbox import doctor  # noqa: PLC0415

    loaded = _loaded(args)
    checks = doctor.run_checks(loaded, f"ok ({loaded.path or 'built-in defaults'})")
    if args.json:
        _print_json([c.to_dict() for c in checks])
    else:
        for c in checks:
            print(f"[{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
            if c.hint:
                print(f"       -> {c.hint}")
    return 0 if all(c.ok for c in checks) else EX_FAILED


# ---- parser ------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"agentbox: error: {message}\n")


def _spec_arguments(p: argparse.ArgumentParser, scheduled: bool = False) -> None:
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
        help="a tool an agent task may call (repeat; default: all): clock, calculator, fetch",
    )
    p.add_argument("--max-tokens", dest="max_tokens", type=int)
    p.add_argument("--priority", type=int, help="0 (lowest) to 9 (highest), default 5")
    p.add_argument("--deadline", dest="deadline_s", type=float, help="seconds until it expires")
    p.add_argument("--schema", help="JSON Schema file the output must satisfy")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="agentbox", description="Runs AI tasks on this box: local model, cloud, MQTT.")
    p.add_argument("--version", action="version", version=f"agentbox {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)

    run = sub.add_parser("run", help="run the daemon in the foreground (what systemd runs)")
    run.add_argument(
        "--config", help="TOML file (default $AGENTBOX_CONFIG or /etc/agentbox/agentbox.toml)"
    )
    run.set_defaults(fn=cmd_run)

    s = sub.add_parser("submit", help="submit a task to the local daemon")
    _spec_arguments(s)
    s.add_argument("--wait", action="store_true", help="wait and print the result")
    s.add_argument("--json", action="store_true", help="print the task as JSON")
    s.set_defaults(fn=cmd_submit)

    r = sub.add_parser("route", help="dry run: where the router would send a task, and why")
    _spec_arguments(r)
    r.add_argument("--json", action="store_true")
    r.add_argument("--config")
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

    sc = sub.add_parser("schedules", help="recurring jobs: list, set, delete")
    scsub = sc.add_subparsers(dest="sched_cmd", required=True, parser_class=Parser)
    scl = scsub.add_parser("list", help="each schedule and its next run")
    scl.add_argument("--json", action="store_true")
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
    _spec_arguments(scs, scheduled=True)
    scs.add_argument("--json", action="store_true", help="print the schedule as JSON")
    scd = scsub.add_parser("delete")
    scd.add_argument("name")
    sc.set_defaults(fn=cmd_schedules)

    st = sub.add_parser("status", help="the running daemon's state")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_status)

    rl = sub.add_parser("reload", help="make the daemon re-read config and keys (like SIGHUP)")
    rl.set_defaults(fn=cmd_reload)

    k = sub.add_parser("keys", help="the key store")
    ksub = k.add_subparsers(dest="keys_cmd", required=True, parser_class=Parser)
    ks = ksub.add_parser("set", help="store a key read from stdin or a hidden prompt")
    ks.add_argument("name")
    kd = ksub.add_parser("delete")
    kd.add_argument("name")
    kl = ksub.add_parser("list", help="key names and where each comes from; never the key")
    kl.add_argument("--json", action="store_true")
    kt = ksub.add_parser("test", help="check a provider's key with its model listing")
    kt.add_argument("name")
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

    f = sub.add_parser("fleet", help="every box on the broker: state, load, queue, spend")
    f.add_argument("--once", action="store_true", help="print once and exit (else refresh)")
    f.add_argument("--json", action="store_true")
    f.add_argument(
        "--wait", type=float, default=2.0, help="seconds to listen before printing (default 2)"
    )
    f.add_argument("--config", help="TOML file whose [mqtt] section says which broker")
    f.set_defaults(fn=cmd_fleet)

    d = sub.add_parser("doctor", help="check config, state, keys, broker, model and disk")
    d.add_argument("--config")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_doctor)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.fn(args)
    except CliError as exc:
        print(f"agentbox: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EX_FAILED
    return code
