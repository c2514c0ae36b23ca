"""What people bring from `llm`, `mosquitto_*` and `systemctl`: -m, a prompt from stdin, usage
errors exit 2, Ctrl-C leaves the task running, clear words for cancel and unknown ids, help
for every subcommand, and a bare `agentbox` that lists the commands."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agentbox.cli import build_parser
from tests.conftest import NO_MQTT, ROOT, Daemon, wait_for
from tests.fakes import FakeProvider, Reply, openai_stream


def subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str | None, argparse.ArgumentParser]]:
    """Every subcommand at any depth: (its words, its help, its parser)."""
    # argparse has no public way to list its subcommands and their help.
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            helps = {a.dest: a.help for a in action._choices_actions}  # noqa: SLF001
            for name, sub in action.choices.items():
                yield (*path, name), helps.get(name), sub
                yield from subcommands(sub, (*path, name))


def test_every_subcommand_has_help_text() -> None:
    """Generic: a subcommand added later must bring its help too."""
    found = list(subcommands(build_parser()))
    assert len(found) > 20
    missing = [" ".join(words) for words, text, _ in found if not (text or "").strip()]
    assert missing == [], f"subcommands without help: {missing}"


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "agentbox", *args],
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )


def test_bare_agentbox_prints_the_command_list() -> None:
    proc = run()
    assert proc.returncode == 0, proc.stderr
    top = [words[0] for words, _, _ in subcommands(build_parser()) if len(words) == 1]
    for name in top:
        assert f"\n    {name}" in proc.stdout, name
    nested = run("tasks")  # a group without its subcommand: argparse's usage error, with choices
    assert nested.returncode == 2 and "{list,get,cancel}" in nested.stderr


def cloud(fake: FakeProvider) -> str:
    return (
        NO_MQTT
        + "[local]\nenabled = false\n"
        + f"[providers.fake]\nkind = 'openai'\nbase_url = '{fake.url}/v1'\nmodel = 'gpt-4o-mini'\n"
        + "heavy_model = 'gpt-4o'\n"
    )


def prompts(fake: FakeProvider) -> list[str]:
    return [
        r["json"]["messages"][-1]["content"]
        for r in fake.requests
        if r["path"].endswith("/chat/completions")
    ]


@pytest.fixture
def box(daemons: Any, fake: FakeProvider) -> Daemon:
    d: Daemon = daemons(cloud(fake)).start()
    return d


def test_usage_errors_exit_2(box: Daemon, short_tmp: Any) -> None:
    d = box
    cases: list[tuple[tuple[str, ...], str | None, str]] = [
        (("frobnicate",), None, "invalid choice"),
        (("submit", "--tier", "gpu", "x"), None, "invalid choice"),
        (("tasks", "list", "--limit", "many"), None, "invalid int"),
        (("submit",), None, "nothing to submit"),
        (("submit", "-"), "   \n", "nothing to submit"),
        (("submit", "--spec", "-", "-"), "{}", "stdin cannot be both"),
        (("submit", "--model", "gpt-4o", "hi"), None, "give PROVIDER/MODEL"),
        # the daemon refuses the input: still the caller's mistake
        (("submit", "--priority", "99", "hi"), None, "rejected (invalid_request)"),
        (("submit", "-m", "nope/x", "hi"), None, "no provider named 'nope'"),
        (("route", "--priority", "99", "hi"), None, "invalid_request"),
        (("schedules", "set", "tick", "--prompt", "hi"), None, "exactly one of --every"),
        (("schedules", "set", "bad name", "--every", "60", "--prompt", "hi"), None, "name"),
        (("keys", "set", "Bad!Name"), "sk-123", "invalid key name"),
        (("keys", "set", "fake"), "\n", "empty key"),
        (("keys", "delete", "Bad!Name"), None, "invalid key name"),
        (("keys", "test", "nope"), None, "no [providers.nope]"),
    ]
    for args, stdin, text in cases:
        proc = d.cli(*args, input=stdin, check=False)
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
        assert text in proc.stderr, (args, proc.stderr)
    # not usage errors: something the box could not do or find
    assert d.cli("tasks", "get", "nope", check=False).returncode == 1
    assert d.cli("keys", "delete", "never-set", check=False).returncode == 1


def test_submit_model_flag_and_prompt_from_stdin(box: Daemon, fake: FakeProvider) -> None:
    d = box
    task = d.json("submit", "--wait", "-m", "fake/gpt-4o", "Pinned.")
    assert task["route"]["provider"] == "fake" and "model pinned" in task["route"]["reason"]
    assert fake.requests[-1]["json"]["model"] == "gpt-4o"  # not the everyday gpt-4o-mini
    d.cli("submit", "--wait", "--model", "fake/o3", "Long form.")
    assert fake.requests[-1]["json"]["model"] == "o3"

    d.cli("submit", "--wait", "--tier", "cloud", "-", input="From a dash.\n")
    d.cli("submit", "--wait", "--tier", "cloud", input="From a pipe.")
    assert prompts(fake)[-2:] == ["From a dash.\n", "From a pipe."]
    # a prompt argument wins: stdin is not read (a script's loop keeps its input)
    d.cli("submit", "--wait", "--tier", "cloud", "Argument.", input="not read")
    assert prompts(fake)[-1] == "Argument."


def test_ctrl_c_while_waiting_leaves_the_task_running(box: Daemon, fake: FakeProvider) -> None:
    d = box
    gate = threading.Event()

    def held(request: dict[str, Any]) -> Reply:
        if request["path"].endswith("/chat/completions"):
            gate.wait(120)
        return openai_stream("finished after all")

    fake.answer = held
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentbox", "submit", "--wait", "--tier", "cloud", "Slow one."],
        env=d.env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        running = wait_for(
            lambda: [t for t in d.json("tasks", "list") if t["state"] == "running"], 60
        )
        task_id = running[0]["id"]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert f"task {task_id} keeps running" in err and f"agentbox tasks cancel {task_id}" in err
    assert "Traceback" not in err and out == ""
    done = wait_for(lambda: (t := d.task(task_id))["state"] != "running" and t, 60)
    assert done["state"] == "succeeded" and done["output"] == "finished after all"


def test_cancel_says_what_it_did(box: Daemon, fake: FakeProvider) -> None:
    d = box
    finished = d.json("submit", "--wait", "--id", "done-already", "Quick.")
    assert finished["state"] == "succeeded"
    late = d.cli("tasks", "cancel", "done-already", check=False)
    assert late.returncode == 1
    assert "task done-already already finished (succeeded): nothing to cancel" in late.stderr
    as_json = d.cli("tasks", "cancel", "done-already", "--json", check=False)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["state"] == "succeeded"

    gate = threading.Event()

    def held(request: dict[str, Any]) -> Reply:
        if request["path"].endswith("/chat/completions"):
            gate.wait(120)
        return openai_stream("late")

    fake.answer = held
    try:
        d.cli("submit", "--id", "busy", "--tier", "cloud", "Slow.")
        wait_for(lambda: d.task("busy")["state"] == "running", 60)
        now = d.cli("tasks", "cancel", "busy")
        assert now.stdout.strip() == "cancelling busy: it stops at its next step"
        assert wait_for(lambda: d.task("busy")["state"] == "cancelled", 60)
    finally:
        gate.set()
    again = d.cli("tasks", "cancel", "busy")  # cancelled already: what was asked holds
    assert again.returncode == 0 and again.stdout.strip() == "cancelled busy"


def test_unknown_task_id_is_named(box: Daemon) -> None:
    d = box
    for op in ("get", "cancel"):
        proc = d.cli("tasks", op, "no-such-task", check=False)
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr.strip() == "agentbox: no task with id 'no-such-task'"
        as_json = d.cli("tasks", op, "no-such-task", "--json", check=False)
        assert as_json.returncode == 1
        assert json.loads(as_json.stdout) == {
            "id": "no-such-task",
            "error": {"code": "not_found", "message": "no task with id 'no-such-task'"},
        }
