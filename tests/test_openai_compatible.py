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

from agentbox.providers import http, registry
from agentbox.providers.base import Request
from agentbox.providers.local import LocalProvider, bundled_model
from agentbox.providers.transport import HttpClient
from agentbox.settings import ProviderConfig
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


def real_prompt_tokens(base: str, prompt: str) -> int:
    """The server's own count: its non-streaming answer carries usage."""
    body = {"model": "smollm2", "messages": [{"role": "user", "content": prompt}], "max_tokens": 1}
    reply = httpx.post(f"{base}/chat/completions", json=body, timeout=120).json()
    return int(reply["usage"]["prompt_tokens"])


async def test_no_usage_counted_by_the_servers_tokenizer_and_the_local_template(
    llama_server: str,
) -> None:
    """llama-cpp-python's server streams no usage but has /extras/tokenize: the output is
    counted there exactly; the input is exact once the local model (the same model here)
    renders the chat with its own template, which adds a system prompt the client never sent."""
    prompt = "Say hello."
    real = real_prompt_tokens(llama_server, prompt)
    conf = ProviderConfig(kind="openai", base_url=llama_server, model="smollm2", auth="none")
    local = LocalProvider("", 1, 1024)
    request = Request([{"role": "user", "content": prompt}], 16)
    async with HttpClient(2) as client:
        alone = registry.build("llama", conf, lambda: None, client)
        c = await alone.complete(request)
        assert alone.tokenizer.kind == "llama-cpp-python"  # type: ignore[attr-defined]
        assert c.estimated and c.output_tokens == count(llama_server, c.text)
        guessed = http.prompt_estimate(request.messages)
        assert abs(c.input_tokens - real) < abs(guessed - real)  # ChatML framing, counted

        await local.complete(Request([{"role": "user", "content": "hi"}], 2))  # worker up
        helped = registry.build("llama", conf, lambda: None, client, local=local)
        c = await helped.complete(request)
        assert c.input_tokens == real, (c.input_tokens, real, guessed)
        assert c.output_tokens == count(llama_server, c.text)
    await local.close()


def count(base: str, text: str) -> int:
    root = base.removesuffix("/v1")
    return int(httpx.post(f"{root}/extras/tokenize/count", json={"input": text}).json()["count"])


def test_daemon_counts_a_keyless_server_close_to_its_real_usage(
    daemons: Any, llama_server: str
) -> None:
    """The issue's case: a keyless server without usage was counted 9 against 34 real input
    tokens. With the local model up, the daemon's count is the server's own."""
    conf = config(llama_server).replace("enabled = false", "enabled = true") + "auth = 'none'\n"
    d = daemons(conf).start()
    real = real_prompt_tokens(llama_server, "Say hello.")
    local = d.json("submit", "--wait", "--tier", "local", "--max-tokens", "2", "Say hello.")
    assert local["state"] == "succeeded", local
    assert local["usage"]["input_tokens"] == real  # the local model counts the same prompt alike
    task = d.json("submit", "--wait", "--tier", "cloud", "--max-tokens", "16", "Say hello.")
    assert task["state"] == "succeeded", task
    usage = task["usage"]
    assert usage["input_tokens"] == real
    assert usage["output_tokens"] == count(llama_server, task["output"])
    assert usage["cost_usd"] == 0  # keyless on loopback: free
    assert d.stop() == 0
