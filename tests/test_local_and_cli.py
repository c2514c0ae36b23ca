"""The real local model behind the daemon, driven through the real CLI."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NO_MQTT, children, wait_for


@pytest.mark.timeout(900)  # its own waits: 600 s for a local generation beside a QEMU guest
def test_local_worker_killed_mid_task_is_restarted_and_the_task_retried(daemons: Any) -> None:
    d = daemons(NO_MQTT).start()
    d.cli(
        "submit",
        "--id",
        "long",
        "--tier",
        "local",
        "--max-tokens",
        "400",
        "Count from 1 to 1000, separated by commas.",
    )
    wait_for(lambda: d.task("long")["state"] == "running", 60, what="running")
    worker = wait_for(lambda: children(d.proc.pid), 30, what="worker process")[0]
    wait_for(lambda: d.json("status")["local"]["loaded"], 60, what="model loaded")
    os.kill(worker, signal.SIGKILL)

    final = {"succeeded", "failed", "expired", "cancelled"}
    # Bounded, not timed: minutes when a QEMU guest holds the cores.
    task = wait_for(lambda: (t := d.task("long"))["state"] in final and t, 600, interval=0.3)
    assert task["state"] == "succeeded", task
    assert task["attempts"] == 2
    assert d.proc.poll() is None
    status = d.json("status")
    assert status["local"]["restarts"] == 1 and status["local"]["loaded"]
    assert "local worker died (signal 9)" in d.log()
    assert children(d.proc.pid) and worker not in children(d.proc.pid)
    assert d.stop() == 0


def test_schema_output_is_parsed_json(daemons: Any, short_tmp: Path) -> None:
    d = daemons(NO_MQTT).start()
    schema = {
        "type": "object",
        "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative"]}},
        "required": ["sentiment"],
    }
    path = short_tmp / "schema.json"
    path.write_text(json.dumps(schema))
    task = d.json(
        "submit",
        "--wait",
        "--schema",
        str(path),
        "--max-tokens",
        "40",
        "Classify the sentiment of: 'I loved this film.'",
    )
    assert task["state"] == "succeeded", task
    assert task["data"]["sentiment"] in ("positive", "negative")
    assert task["usage"]["input_tokens"] > 0 and task["usage"]["output_tokens"] > 0
    assert task["route"]["tier"] == "local" and task["route"]["model"].startswith("SmolLM2")
    d.stop()


def test_spec_from_stdin_and_clear_rejections(daemons: Any) -> None:
    d = daemons(NO_MQTT).start()
    spec = {"id": "from-stdin", "prompt": "Say yes.", "max_tokens": 4, "meta": {"job": 7}}
    out = d.cli("submit", "--spec", "-", "--json", "--wait", input=json.dumps(spec))
    task = json.loads(out.stdout)
    assert task["id"] == "from-stdin" and task["meta"] == {"job": 7}

    bad = d.cli(
        "submit", "--spec", "-", input=json.dumps({"prompt": "x", "colour": "red"}), check=False
    )
    assert bad.returncode == 2  # the daemon refused the input: a usage error
    assert bad.stderr.strip() == "agentbox: rejected (invalid_request): colour: unknown field"
    notjson = d.cli("submit", "--spec", "-", input="{nope", check=False)
    assert notjson.returncode == 2 and "not JSON" in notjson.stderr
    empty = d.cli("submit", check=False)
    assert empty.returncode == 2 and "give a PROMPT" in empty.stderr
    missing = d.cli("tasks", "get", "nope", check=False)
    assert missing.returncode == 1 and "no task with id 'nope'" in missing.stderr
    assert [t["id"] for t in d.json("tasks", "list")] == ["from-stdin"]
    d.stop()


def test_cancel_from_the_cli(daemons: Any) -> None:
    d = daemons(NO_MQTT).start()
    d.cli(
        "submit",
        "--id",
        "busy",
        "--tier",
        "local",
        "--max-tokens",
        "1500",
        "Count from 1 to 1000, separated by commas.",
    )
    d.cli("submit", "--id", "waiting", "--tier", "local", "Say hi.")
    assert d.json("tasks", "cancel", "waiting")["state"] == "cancelled"
    wait_for(lambda: d.task("busy")["state"] == "running", 60)
    d.cli("tasks", "cancel", "busy")
    assert wait_for(lambda: d.task("busy")["state"] == "cancelled", 30)
    assert d.stop() == 0


def test_broken_model_file_fails_the_task_with_a_clear_error(daemons: Any, short_tmp: Path) -> None:
    junk = short_tmp / "junk.gguf"
    junk.write_bytes(b"not a model")
    d = daemons(NO_MQTT + f"[local]\nmodel_path = '{junk}'\n").start()
    proc = d.cli("submit", "--wait", "--json", "Hello", check=False)
    task = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert task["state"] == "failed" and task["attempts"] == 1
    assert task["error"]["code"] == "provider_unavailable"
    assert "cannot load model" in task["error"]["message"]
    assert d.proc.poll() is None
    d.stop()


def test_no_daemon_gives_a_hint(daemons: Any) -> None:
    d = daemons(NO_MQTT)
    proc = d.cli("submit", "hi", check=False)
    assert proc.returncode == 69
    assert "start the daemon" in proc.stderr and "Traceback" not in proc.stderr


def test_second_daemon_on_the_same_state_refuses_to_start(daemons: Any) -> None:
    d = daemons(NO_MQTT).start()
    second = daemons(NO_MQTT, name="state")
    second.start(wait=False)
    assert second.proc.wait(30) == 1
    assert "already serving" in second.log()
    assert d.proc.poll() is None and d.cli("status").returncode == 0
    d.stop()
