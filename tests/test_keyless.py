"""Keyless OpenAI-compatible servers (llama.cpp, Ollama, vLLM on the LAN): no key sent, priced
by what the owner says or free on a local address, accepted by doctor when they answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentbox import config, doctor
from agentbox.config import ConfigError
from agentbox.providers.base import Completion
from agentbox.providers.prices import UNKNOWN, PriceTable, local_address
from agentbox.settings import ProviderConfig
from tests.conftest import NO_MQTT, free_port
from tests.fakes import FakeProvider, Reply, openai_stream

MTOK = 1_000_000


def keyless(base: str, extra: str = "", name: str = "lan") -> str:
    return (
        f"[providers.{name}]\nkind = 'openai'\nbase_url = '{base}'\nmodel = 'qwen2.5-7b'\n"
        f"auth = 'none'\n{extra}"
    )


def table(**providers: ProviderConfig) -> PriceTable:
    return PriceTable({}, providers)


def test_the_pricing_rule() -> None:
    """Owner's price first; then the table by model; an unknown model is free only on a
    keyless provider at a local address, else the dearest price, flagged estimated."""
    lan = ProviderConfig(
        kind="openai", base_url="http://192.168.1.20:8080/v1", model="m", auth="none"
    )
    public = lan.model_copy(update={"base_url": "https://llm.example.com/v1"})
    keyed = lan.model_copy(update={"auth": "key"})
    priced = public.model_copy(update={"price_in": 0.5, "price_out": 2.0})
    prices = table(lan=lan, public=public, keyed=keyed, priced=priced)
    c = Completion("x", "qwen2.5-7b", input_tokens=MTOK, output_tokens=MTOK)

    assert prices.cost(c, "lan") == (0.0, False)
    assert prices.worst_case("qwen2.5-7b", MTOK, MTOK, "lan") == 0.0
    assert prices.cost(c, "public") == (UNKNOWN.input + UNKNOWN.output, True)
    assert prices.cost(c, "keyed") == (UNKNOWN.input + UNKNOWN.output, True)
    assert prices.cost(c, "priced") == (2.5, False)
    assert prices.worst_case("gpt-4o", MTOK, 0, "priced") == 0.5  # the owner's price wins
    # a keyless LAN proxy in front of a paid API still pays for the models the table knows
    assert prices.cost(Completion("x", "gpt-4o-mini", MTOK, 0), "lan") == (0.15, False)

    (warning,) = prices.warnings()
    assert warning.startswith("providers.public takes no key") and "price_in" in warning


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:8080/v1", True),
        ("http://[::1]:11434/v1", True),
        ("http://10.0.0.5/v1", True),
        ("http://172.16.3.4/v1", True),
        ("http://192.168.178.2:8000/v1", True),
        ("http://169.254.10.1/v1", True),
        ("http://100.101.102.103:11434/v1", True),  # a tailnet address
        ("http://[fd12:3456::1]/v1", True),
        ("http://localhost:8080/v1", True),
        ("http://gpu-box.local:8080/v1", True),
        ("http://gpu.home.arpa/v1", True),
        ("http://llm.lan:8080/v1", True),
        ("https://api.groq.com/openai/v1", False),
        ("http://8.8.8.8/v1", False),
        ("http://gpu-box:8080/v1", False),  # a bare name may resolve anywhere: say the price
        ("", False),  # the default base is api.openai.com
    ],
)
def test_local_addresses(url: str, local: bool) -> None:
    assert local_address(url) is local


def test_config_errors_name_the_field(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("AGENTBOX_STATE_DIR", str(tmp_path))
    path = tmp_path / "a.toml"
    for body, text in (
        (
            "[providers.a]\nkind = 'anthropic'\nmodel = 'claude-haiku-4-5'\nauth = 'none'\n",
            "auth = 'none' is for OpenAI-compatible servers",
        ),
        (keyless("http://127.0.0.1/v1", "price_in = 0\n"), "set both price_in and price_out"),
        (keyless("http://127.0.0.1/v1", "price_in = -1\nprice_out = 0\n"), "price_in"),
        (keyless("http://127.0.0.1/v1", "auth = 'maybe'\n").replace("auth = 'none'\n", ""), "auth"),
    ):
        path.write_text(body)
        with pytest.raises(ConfigError, match=r"providers\.(a|lan)") as err:
            config.load(str(path))
        assert text in str(err.value), err.value


def test_doctor_warns_loudly_about_a_keyless_public_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("AGENTBOX_STATE_DIR", str(tmp_path))
    path = tmp_path / "a.toml"
    path.write_text(keyless("https://llm.example.com/v1"))
    (check,) = doctor.check_prices(config.load(str(path)))
    assert not check.ok and "dearest price" in check.detail and "qwen2.5-7b" in check.detail
    path.write_text(keyless("https://llm.example.com/v1", "price_in = 0\nprice_out = 0\n"))
    assert doctor.check_prices(config.load(str(path))) == []
    path.write_text(keyless("http://192.168.1.9:8080/v1"))
    assert doctor.check_prices(config.load(str(path))) == []


def test_keyless_server_end_to_end(daemons: Any, fake: FakeProvider) -> None:
    """A real daemon: no key is sent (even with one stored under that name), the task costs
    nothing, status shows no missing key and no warning, doctor passes the server."""
    fake.default = openai_stream("Hello from the LAN.", model="qwen2.5-7b", usage=False)
    d = daemons(NO_MQTT + "[local]\nenabled = false\n" + keyless(f"{fake.url}/v1"))
    d.cli("keys", "set", "lan", input="sk-should-never-be-sent\n")
    d.start()
    task = d.json("submit", "--wait", "--tier", "cloud", "Say hello.")
    assert task["state"] == "succeeded", task
    assert task["usage"]["cost_usd"] == 0
    sent = [r for r in fake.requests if r["path"].endswith("/chat/completions")]
    assert sent and all("authorization" not in r["headers"] for r in sent)
    status = d.json("status")
    assert status["providers"]["lan"]["auth"] == "none"
    assert status["config_warnings"] == [] and status["spend"]["today_usd"] == 0
    assert "no key" not in d.cli("status").stdout

    fake.default = Reply(body={"object": "list", "data": [{"id": "qwen2.5-7b"}]})
    checks = {c["name"]: c for c in json.loads(d.cli("doctor", "--json", check=False).stdout)}
    assert "key lan" not in checks
    server = checks["server lan"]
    assert server["ok"] and "takes no key" in server["detail"] and "1 models" in server["detail"]
    assert "pricing" not in checks
    tested = d.cli("keys", "test", "lan").stdout
    assert tested.strip() == "lan: the server answers (1 models)"
    assert d.stop() == 0


def test_priced_keyless_server_bills_the_owners_price(daemons: Any, fake: FakeProvider) -> None:
    fake.default = openai_stream("ok", prompt_tokens=1000, completion_tokens=500, model="x")
    extra = "price_in = 1.0\nprice_out = 4.0\n"
    d = daemons(NO_MQTT + "[local]\nenabled = false\n" + keyless(f"{fake.url}/v1", extra))
    d.start()
    task = d.json("submit", "--wait", "--tier", "cloud", "Say hello.")
    assert task["usage"]["cost_usd"] == pytest.approx((1000 * 1.0 + 500 * 4.0) / MTOK)
    assert task["usage"]["estimated"] is False
    assert d.stop() == 0


def test_doctor_fails_a_keyless_server_that_does_not_answer(daemons: Any) -> None:
    d = daemons(
        NO_MQTT + "[local]\nenabled = false\n" + keyless(f"http://127.0.0.1:{free_port()}/v1")
    )
    checks = {c["name"]: c for c in json.loads(d.cli("doctor", "--json", check=False).stdout)}
    server = checks["server lan"]
    assert not server["ok"] and "connection failed" in server["detail"]
    assert "base_url" in server["hint"]


def test_doctor_hint_for_a_missing_key_names_auth_none(daemons: Any, fake: FakeProvider) -> None:
    conf = keyless(f"{fake.url}/v1").replace("auth = 'none'\n", "")
    d = daemons(NO_MQTT + "[local]\nenabled = false\n" + conf)
    checks = {c["name"]: c for c in json.loads(d.cli("doctor", "--json", check=False).stdout)}
    key = checks["key lan"]
    assert not key["ok"] and "auth = 'none'" in key["hint"]
