"""The openai provider end to end against a real OpenAI-compatible server: llama-cpp-python's
own (`llama_cpp.server`) serving the bundled model on loopback, behind a real daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentbox.providers.local import bundled_model
from tests.conftest import NO_MQTT, free_port, wait_for


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = bundled_model()
    assert model is not None, "the bundled model is missing: run ./scripts/setup"
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--model_alias",
                "smollm2",
                "--n_ctx",
                "2048",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/v1"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"llama_cpp.server exited:\n{log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{base}/models", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 60, interval=0.2, what="llama_cpp.server")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def config(base: str) -> str:
    return NO_MQTT + (
        "[local]\nenabled = false\n"
        f"[providers.llama]\nkind = 'openai'\nbase_url = '{base}'\nmodel = 'smollm2'\n"
        "response_format = 'json_object'\n"
    )


def test_cloud_task_through_a_real_openai_compatible_server(
    daemons: Any, llama_server: str
) -> None:
    d = daemons(config(llama_server)).start()
    task = d.json("submit", "--wait", "--max-tokens", "24", "Say hello.")
    assert task["state"] == "succeeded", task
    assert task["output"].strip()
    assert task["route"] == {
        "tier": "cloud",
        "provider": "llama",
        "model": "smollm2",
        "reason": task["route"]["reason"],
    }
    usage = task["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    # this server streams no usage chunk: the counts are ours and the cost says so
    assert usage["estimated"] is True and usage["cost_usd"] > 0

    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    spec = {
        "prompt": "Answer in JSON: what colour is the sky?",
        "schema": schema,
        "max_tokens": 60,
        "tier": "cloud",
    }
    task = json.loads(
        d.cli("submit", "--spec", "-", "--wait", "--json", input=json.dumps(spec)).stdout
    )
    assert task["state"] == "succeeded", task
    assert isinstance(task["data"]["answer"], str)

    status = d.json("status")
    assert status["providers"]["llama"]["state"] == "ok"
    assert status["spend"]["today_usd"] > 0
    assert d.stop() == 0


def test_keys_test_against_the_real_server(daemons: Any, llama_server: str) -> None:
    d = daemons(config(llama_server))
    out = d.cli("keys", "test", "llama")
    assert "key works" in out.stdout and "1 models" in out.stdout
    missing = d.cli("keys", "test", "nope", check=False)
    assert missing.returncode == 2 and "no [providers.nope]" in missing.stderr


def test_route_dry_run_spends_nothing(daemons: Any, llama_server: str) -> None:
    d = daemons(
        config(llama_server).replace("enabled = false\n[providers", "enabled = true\n[providers")
    )
    light = d.json("route", "Say hello.")
    assert light["tier"] == "local" and "light" in light["reason"]
    heavy = d.json("route", "Analyze and compare both designs step by step, then evaluate.")
    assert heavy["tier"] == "cloud" and heavy["provider"] == "llama"
    text = d.cli("route", "Say hello.").stdout
    assert text.startswith("local") and "light" in text
