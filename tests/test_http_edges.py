"""The providers' HTTP edges: proxies from the environment, stale kept-alive connections, the
connection slots following a reload, and the clients kept apart from the providers' slots."""

from __future__ import annotations

import asyncio
import base64
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentbox.agent.tools import Context, fetch
from agentbox.providers import seam
from agentbox.providers.base import ProviderError
from agentbox.providers.http import LIST_TIMEOUT
from agentbox.providers.proxies import Proxies, bypassed
from agentbox.providers.seam import HttpxTransport, Transport
from agentbox.providers.slots import Slots
from agentbox.providers.transport import HttpClient
from agentbox.routing.breaker import OK
from agentbox.routing.pool import test_key as check_key
from agentbox.settings import AgentConfig, ProviderConfig
from agentbox.tasks.notes import NoteStore
from agentbox.tasks.store import Store
from tests.conftest import NO_MQTT, wait_for
from tests.fake_proxy import ConnectProxy, IdleCloser
from tests.fakes import FakeProvider, Reply, error, openai_stream
from tests.pki import SERVER_NAME, make_pki
from tests.test_providers import REQ, make

SECRET = "pr0xy-s3cret"  # the proxy password: it must never show anywhere but its header
PROXY_AUTH = "Basic " + base64.b64encode(f"office:{SECRET}".encode()).decode()


def proxies(name: str, proxy: ConnectProxy, password: str = SECRET, **more: str) -> Proxies:
    url = proxy.url.replace("http://", f"http://office:{password}@")
    return Proxies.from_env({name: url, **more})


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    p = ConnectProxy(hosts={SERVER_NAME: "127.0.0.1"}, user="office", password=SECRET)
    yield p
    p.close()


@pytest.fixture
def tls_fake(short_tmp: Path) -> Iterator[tuple[FakeProvider, ssl.SSLContext]]:
    make_pki(short_tmp)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(short_tmp / "server.crt", short_tmp / "server.key")
    fake = FakeProvider(openai_stream("through the proxy"), tls=server_tls)
    fake.url = f"https://{SERVER_NAME}:{fake.port}"  # only the proxy knows where that is
    yield fake, ssl.create_default_context(cafile=str(short_tmp / "ca.crt"))
    fake.close()


# ---- proxies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ours", "httpx"])
async def test_https_goes_through_a_connect_tunnel_with_credentials_in_its_header_only(
    kind: str, proxy: ConnectProxy, tls_fake: tuple[FakeProvider, ssl.SSLContext]
) -> None:
    fake, trusted = tls_fake
    env = proxies("HTTPS_PROXY", proxy)
    client: Transport = (
        HttpClient(2, trusted, proxies=env)
        if kind == "ours"
        else HttpxTransport(httpx.Timeout(5.0), env, verify=trusted)
    )
    try:
        provider = make("openai", fake, client)
        for _ in range(3):
            assert (await provider.complete(REQ)).text == "through the proxy"
    finally:
        await client.aclose()
    tunnels = [s for s in proxy.seen if s.method == "CONNECT"]
    assert [s.target for s in tunnels] == [f"{SERVER_NAME}:{fake.port}"]  # one, kept alive
    assert tunnels[0].proxy_authorization == PROXY_AUTH
    assert len(fake.requests) == 3
    assert all("proxy-authorization" not in r["headers"] for r in fake.requests)


async def test_key_test_goes_through_the_proxy(
    proxy: ConnectProxy, tls_fake: tuple[FakeProvider, ssl.SSLContext]
) -> None:
    fake, trusted = tls_fake
    fake.push(Reply(body={"data": [{"id": "gpt-4o-mini"}]}))
    conf = ProviderConfig(kind="openai", base_url=f"{fake.url}/v1", model="gpt-4o-mini")
    through = HttpxTransport(LIST_TIMEOUT, proxies("https_proxy", proxy), verify=trusted)
    ok, message = await check_key("p", conf, "sk-1", through)
    await through.aclose()
    assert ok, message
    assert proxy.seen[-1].method == "CONNECT"


async def test_plain_http_goes_absolute_form_and_a_refusal_never_shows_the_password(
    proxy: ConnectProxy, fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    fake.url = f"http://{SERVER_NAME}:{fake.port}"
    async with HttpClient(2, proxies=proxies("http_proxy", proxy)) as client:
        assert (await make("openai", fake, client).complete(REQ)).text == "ok"
    assert (proxy.seen[-1].method, proxy.seen[-1].target) == (
        "POST",
        f"http://{SERVER_NAME}:{fake.port}/v1/chat/completions",
    )
    assert proxy.seen[-1].proxy_authorization == PROXY_AUTH
    assert fake.requests[-1]["path"] == "/v1/chat/completions"
    assert "proxy-authorization" not in fake.requests[-1]["headers"]
    wrong = "wr0ng-s3cret"
    refused: list[Transport] = [
        HttpClient(2, proxies=proxies("HTTP_PROXY", proxy, wrong)),
        HttpxTransport(httpx.Timeout(5.0), proxies("HTTP_PROXY", proxy, wrong)),
    ]
    for through in refused:
        with pytest.raises(ProviderError) as err:
            await make("openai", fake, through).complete(REQ)
        await through.aclose()
        assert "407" in err.value.message or "Proxy" in err.value.message, err.value.message
        assert wrong not in err.value.message and wrong not in repr(err.value)
    async with HttpClient(2, proxies=proxies("HTTPS_PROXY", proxy, wrong)) as client:
        fake.url = f"https://{SERVER_NAME}:{fake.port}"
        with pytest.raises(ProviderError) as err:
            await make("openai", fake, client).complete(REQ)
    assert "refused CONNECT: HTTP 407" in err.value.message
    assert "127.0.0.1" in err.value.message and wrong not in err.value.message
    assert wrong not in caplog.text and SECRET not in caplog.text


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "direct"),
    [
        ("api.example.com", 443, "", False),
        ("api.example.com", 443, "*", True),
        ("api.example.com", 443, "example.com", True),  # a domain covers its subdomains
        ("api.example.com", 443, ".example.com", True),
        ("api.example.com", 443, "*.example.com", True),
        ("example.com", 443, ".example.com", True),
        ("badexample.com", 443, "example.com", False),  # a suffix of labels, not of letters
        ("api.example.com", 443, "other.org, API.Example.COM", True),
        ("api.example.com", 443, "example.com:8443", False),  # the port must match
        ("api.example.com", 8443, "example.com:8443", True),
        ("10.1.2.3", 443, "10.0.0.0/8", True),
        ("10.1.2.3", 443, "10.1.2.3", True),
        ("11.1.2.3", 443, "10.0.0.0/8", False),
        ("fd00::5", 443, "fd00::/8", True),
        ("fd00::5", 443, "[fd00::5]:443", True),
        ("fd00::5", 80, "[fd00::5]:443", False),
    ],
)
def test_no_proxy_entries(host: str, port: int, no_proxy: str, direct: bool) -> None:
    assert bypassed(host, port, no_proxy) is direct


def test_proxy_settings_from_the_environment() -> None:
    both = Proxies.from_env(
        {"https_proxy": "http://lower:3128", "HTTPS_PROXY": "http://upper:3128", "NO_PROXY": "x"}
    )
    picked = both.pick("https://api.example.com/v1")
    assert picked is not None and picked.shown == "lower:3128"  # lowercase first, as curl
    assert both.pick("http://api.example.com/v1") is None  # no http_proxy: direct
    assert both.pick("https://x/v1") is None
    assert both.pick("https://127.0.0.1:8080/v1") is None  # loopback: always direct
    assert both.pick("https://localhost/v1") is None
    bare = Proxies.from_env({"HTTP_PROXY": f"office:{SECRET}@proxy.lan"}).pick("http://a.b/")
    assert bare is not None and (bare.host, bare.port) == ("proxy.lan", 1080)
    assert SECRET not in repr(bare) and SECRET not in bare.shown
    bad = Proxies.from_env({"HTTPS_PROXY": f"socks5://office:{SECRET}@proxy.lan:1080"})
    assert bad.problems == [
        "HTTPS_PROXY: only an http:// proxy (HTTP CONNECT) is supported, not socks5://"
    ]
    with pytest.raises(ValueError, match="HTTPS_PROXY") as err:
        bad.pick("https://api.example.com/")
    assert SECRET not in str(err.value)


async def test_an_unusable_proxy_setting_fails_calls_and_never_goes_direct(
    fake: FakeProvider,
) -> None:
    fake.url = f"http://{SERVER_NAME}:{fake.port}"
    broken = Proxies.from_env({"HTTP_PROXY": f"https://office:{SECRET}@127.0.0.1:9"})
    async with HttpClient(2, proxies=broken) as client:
        with pytest.raises(ProviderError) as err:
            await make("openai", fake, client).complete(REQ)
    assert "HTTP_PROXY: only an http:// proxy" in err.value.message
    assert SECRET not in err.value.message and not fake.requests


def test_a_daemon_behind_a_proxy_keeps_its_credentials_out_of_logs_and_results(
    daemons: Any, proxy: ConnectProxy, fake: FakeProvider
) -> None:
    proxy.want = "Basic b3RoZXI6b3RoZXI="  # not yet the password the box was given
    config = (
        f"{NO_MQTT}[local]\nenabled = false\n[tasks]\nmax_attempts = 1\n"
        f"[providers.main]\nkind = 'openai'\nmodel = 'gpt-4o-mini'\n"
        f"base_url = 'http://{SERVER_NAME}:{fake.port}/v1'\n"
    )
    url = proxy.url.replace("http://", f"http://office:{SECRET}@")
    d = daemons(config, env={"HTTP_PROXY": url, "NO_PROXY": "elsewhere.test"}).start()
    d.cli("submit", "--id", "refused", "--tier", "cloud", "hello")
    failed = wait_for(lambda: (t := d.task("refused"))["state"] == "failed" and t, 30)
    assert "407" in str(failed) or "Proxy" in str(failed), failed
    proxy.want = PROXY_AUTH
    d.cli("submit", "--id", "through", "--tier", "cloud", "hello")
    done = wait_for(lambda: (t := d.task("through"))["state"] == "succeeded" and t, 30)
    assert done["output"] == "ok"
    assert proxy.seen[-1].target.startswith(f"http://{SERVER_NAME}:{fake.port}/")
    shown = d.log() + str(failed) + d.cli("status", "--json").stdout + str(done)
    assert SECRET not in shown and "office:" not in shown


# ---- a kept-alive connection the server closed while it sat idle ------------------------------


async def test_a_stale_kept_alive_connection_is_retried_and_not_held_against_the_provider(
    rig_factory: Any, fake: FakeProvider
) -> None:
    closer = IdleCloser(fake.port, idle_s=0.2)
    try:
        conf = {"kind": "openai", "model": "gpt-4o-mini", "base_url": f"{closer.url}/v1"}
        rig = await rig_factory({"providers": {"main": conf}, "local": {"enabled": False}})
        for _ in range(3):
            out = await rig.run({"prompt": "hi", "tier": "cloud"})
            assert out.result["output"] == "ok"
            await asyncio.sleep(0.3)  # idle past the server's limit, not yet past ours (5 s)
        assert closer.dropped == 2  # the second and third calls met a stale connection
        breaker = rig.pool.breakers["main"]
        assert (breaker.state, breaker.failures, breaker.last_error) == (OK, 0, "")
        assert len(fake.requests) == 3  # each call reached the provider once
    finally:
        closer.close()


async def test_a_stale_connection_is_retried_once_only(fake: FakeProvider) -> None:
    closer = IdleCloser(fake.port, idle_s=0.2)
    fake.url = closer.url
    try:
        async with HttpClient(2) as client:
            provider = make("openai", fake, client)
            assert (await provider.complete(REQ)).text == "ok"
            await asyncio.sleep(0.3)
            closer.refuse_new = True  # the retry's new connection gets no answer either
            with pytest.raises(ProviderError, match="connection failed"):
                await provider.complete(REQ)
        assert (closer.dropped, closer.connections) == (1, 2)
    finally:
        closer.close()


# ---- the slot count --------------------------------------------------------------------------


async def test_slots_resize_wakes_waiters_and_a_timeout_gives_nothing_away() -> None:
    slots = Slots(1)
    await slots.acquire(1.0)
    waiting = [asyncio.create_task(slots.acquire(30.0)) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(t.done() for t in waiting)
    slots.resize(3)
    await asyncio.gather(*waiting)
    assert slots.busy == 3
    slots.resize(1)
    with pytest.raises(httpx.PoolTimeout):
        await slots.acquire(0.05)
    for _ in range(3):
        slots.release()
    assert slots.busy == 0
    await slots.acquire(0.05)
    assert slots.busy == 1


def test_a_reload_that_widens_the_cloud_lane_widens_the_connection_slots(
    daemons: Any, fake: FakeProvider
) -> None:
    width = 4
    together = threading.Barrier(width, timeout=30)

    def answer(_: dict[str, Any]) -> Reply:
        try:
            together.wait()  # every task's call at the provider at once, or none answers well
        except threading.BrokenBarrierError:
            return error(400, {"error": {"message": "calls did not arrive together"}})
        reply = openai_stream("together")
        reply.delay = 0.2
        return reply

    fake.answer = answer
    base = (
        f"{NO_MQTT}[local]\nenabled = false\n[providers.main]\nkind = 'openai'\n"
        f"model = 'gpt-4o-mini'\nbase_url = '{fake.url}/v1'\n[tasks]\nmax_attempts = 1\n"
    )
    d = daemons(base + "cloud_concurrency = 2\n").start()
    d.config_path.write_text(base + f"cloud_concurrency = {width}\n")
    assert d.cli("reload").stdout.strip() == "reloaded"
    ids = [f"t{i}" for i in range(width)]
    for task_id in ids:
        d.cli("submit", "--id", task_id, "--tier", "cloud", "hello")

    def finished() -> list[dict[str, Any]] | None:
        tasks = [d.task(i) for i in ids]
        return tasks if all(t["state"] in ("succeeded", "failed") for t in tasks) else None

    tasks = wait_for(finished, 120)
    assert [t["state"] for t in tasks] == ["succeeded"] * width, [t.get("error") for t in tasks]


# ---- the fetch tool and key tests keep off the providers' slots ------------------------------


async def test_fetch_and_key_tests_work_while_every_provider_slot_is_taken(
    rig_factory: Any, fake: FakeProvider, short_tmp: Path
) -> None:
    conf = {"kind": "openai", "model": "gpt-4o-mini", "base_url": f"{fake.url}/v1"}
    rig = await rig_factory(
        {
            "providers": {"main": conf},
            "local": {"enabled": False},
            "tasks": {"cloud_concurrency": 1},
        }
    )
    held = seam.stream(rig.pool.client, "GET", f"{fake.url}/v1/models")
    fake.push(Reply(body={"data": []}, delay=0.0))
    async with held:  # the one provider slot, taken
        agent = AgentConfig(
            fetch_allow=["127.0.0.1"], fetch_allow_private=["127.0.0.1"], fetch_ports=[fake.port]
        )
        fake.push(Reply(body={"page": "yes"}))
        ctx = Context(agent, rig.runner.http, NoteStore(Store(short_tmp / "n.db")), "t")
        assert '{"page": "yes"}' in await fetch({"url": f"{fake.url}/page"}, ctx)
        fake.push(Reply(body={"data": [{"id": "gpt-4o-mini"}]}))
        ok, message = await check_key("main", ProviderConfig(**conf), "sk-1")  # type: ignore[arg-type]
        assert ok, message
