"""The MQTT contract against a real Mosquitto and a real MQTT client."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agentbox.agent.names import NAMES as TOOL_NAMES
from agentbox.control_client import ControlClient, ControlError
from tests.conftest import free_port, wait_for
from tests.fakes import FakeProvider, openai_stream, tool_calls
from tests.mqtt_peer import Broker, Peer
from tests.pki import make_pki

PREFIX = "agentbox/v1"


def mqtt_config(port: int, device: str, extra: str = "") -> str:
    return f"[device]\nid = '{device}'\n[mqtt]\nhost = '127.0.0.1'\nport = {port}\n{extra}"


def start_box(
    daemons: Any, broker: Broker, device: str = "box1", extra: str = "", **kw: Any
) -> Any:
    d = daemons(mqtt_config(broker.port, device, extra), name=device, **kw).start()
    wait_for(lambda: d.json("status")["mqtt"]["connected"], 20, what="mqtt connected")
    return d


def test_request_response_v5_reply_to_and_default_topic(
    daemons: Any, broker: Broker, peers: list[Peer]
) -> None:
    d = start_box(daemons, broker)
    peer = Peer(broker.port)
    peers.append(peer)
    peer.subscribe("replies/#", f"{PREFIX}/box1/task/+/result", f"{PREFIX}/box1/task/+/event")
    base = f"{PREFIX}/box1"
    peer.publish(
        f"{base}/task/submit",
        {"id": "v5", "prompt": "Say hi.", "max_tokens": 8},
        response_topic="replies/v5",
        correlation=b"\x01corr-42",
    )
    peer.publish(
        f"{base}/task/submit",
        {"id": "v3", "prompt": "Say hi.", "max_tokens": 8, "reply_to": "replies/v3"},
    )
    peer.publish(f"{base}/task/submit", {"id": "plain", "prompt": "Say hi.", "max_tokens": 8})
    # Three local generations: seconds alone, minutes when a VM shares the cores.
    wait_for(lambda: len(peer.on("replies/#")) >= 2 and peer.on(f"{base}/task/plain/result"), 300)

    [(_, v5, corr, _)] = peer.on("replies/v5")
    assert corr == b"\x01corr-42"
    assert v5["id"] == "v5" and v5["state"] == "succeeded" and v5["output"]
    [(_, v3, corr3, _)] = peer.on("replies/v3")
    assert v3["id"] == "v3" and v3["state"] == "succeeded" and corr3 is None
    [(_, plain, _, _)] = peer.on(f"{base}/task/plain/result")
    assert plain["state"] == "succeeded"
    events = [body["event"] for _, body, _, _ in peer.on(f"{base}/task/v5/event")]
    assert events == ["accepted", "running", "result"]

    # A known id answers at once with the task as it is and runs nothing.
    peer.publish(
        f"{base}/task/submit",
        {"id": "v5", "prompt": "something else"},
        response_topic="replies/again",
        correlation=b"again",
    )
    wait_for(lambda: peer.on("replies/again"), 10)
    [(_, again, corr, _)] = peer.on("replies/again")
    assert again["output"] == v5["output"] and again["attempts"] == 1 and corr == b"again"

    peer.publish(f"{base}/task/get", {"id": "v3"}, response_topic="replies/get", correlation=b"g")
    peer.publish(f"{base}/task/get", {"id": "nope"}, response_topic="replies/get2")
    wait_for(lambda: peer.on("replies/get") and peer.on("replies/get2"), 10)
    assert peer.on("replies/get")[0][1]["state"] == "succeeded"
    assert peer.on("replies/get2")[0][1]["error"]["code"] == "not_found"
    assert d.stop() == 0


def test_status_online_will_offline_and_stopped(
    daemons: Any, broker: Broker, peers: list[Peer]
) -> None:
    d = start_box(daemons, broker)
    peer = Peer(broker.port)
    peers.append(peer)
    peer.subscribe(f"{PREFIX}/box1/status", f"{PREFIX}/box1/info")
    wait_for(lambda: peer.on(f"{PREFIX}/box1/info"), 5)
    _, status, _, retained = peer.on(f"{PREFIX}/box1/status")[-1]
    assert status["state"] == "online" and retained
    info = peer.on(f"{PREFIX}/box1/info")[-1][1]
    assert info["device_id"] == "box1" and "version" in info and "providers" in info

    d.kill9()
    wait_for(lambda: peer.on(f"{PREFIX}/box1/status")[-1][1]["state"] == "offline", 10)
    d.start()
    wait_for(lambda: peer.on(f"{PREFIX}/box1/status")[-1][1]["state"] == "online", 20)
    assert peer.on(f"{PREFIX}/box1/status")[-1][1]["session"] == status["session"] + 1
    assert d.stop() == 0
    wait_for(lambda: peer.on(f"{PREFIX}/box1/status")[-1][1]["state"] == "stopped", 10)


@pytest.mark.timeout(900)  # its own waits: 600 s for local generations beside a QEMU guest
def test_broker_down_for_20_s_delays_results_but_loses_none(
    daemons: Any, short_tmp: Path, peers: list[Peer]
) -> None:
    b = Broker(short_tmp, persistence=True).start()
    try:
        d = start_box(daemons, b)
        peer = Peer(b.port, client_id="integrator", persistent=True)
        peers.append(peer)
        peer.subscribe(f"{PREFIX}/box1/task/+/result")
        ids = [f"out-{i}" for i in range(8)]
        for i in ids:
            peer.publish(
                f"{PREFIX}/box1/task/submit",
                {"id": i, "prompt": "Write a haiku.", "max_tokens": 40},
            )
        wait_for(lambda: len(d.json("tasks", "list")) == len(ids), 20, what="all accepted")
        b.stop()
        wait_for(
            lambda: all(t["state"] == "succeeded" for t in d.json("tasks", "list")),
            600,  # eight local haikus: a minute alone, much longer on a loaded machine
            interval=0.5,
            what="all done while the broker is down",
        )
        time.sleep(20)  # the outage the issue asks for
        b.start()
        wait_for(
            lambda: len(peer.on(f"{PREFIX}/box1/task/+/result")) >= len(ids),
            90,
            interval=0.5,
            what="results after the broker came back",
        )
        time.sleep(2)  # room for a duplicate to show up
        got = Counter(body["id"] for _, body, _, _ in peer.on(f"{PREFIX}/box1/task/+/result"))
        assert got == Counter({i: 1 for i in ids})
        assert d.stop() == 0
    finally:
        b.stop()


def test_a_thousand_malformed_messages(daemons: Any, broker: Broker, peers: list[Peer]) -> None:
    # A fixed mmap threshold stops glibc from moving large freed payloads onto the heap, so RSS
    # measures what the daemon keeps, not what the allocator keeps.
    malloc = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "2"}
    d = start_box(daemons, broker, env=malloc)
    peer = Peer(broker.port)
    peers.append(peer)
    peer.subscribe("bad/#")
    submit = f"{PREFIX}/box1/task/submit"
    kinds: list[bytes | str] = [
        b"not json at all",
        b"\xff\xfe\xfa invalid utf-8",
        "[" * 5000 + "]" * 5000,
        json.dumps({"prompt": 42}),
        json.dumps({"prompt": "x", "id": "bad id!"}),
        json.dumps({"prompt": "x", "priority": "high"}),
        json.dumps(["a", "list"]),
        json.dumps({"prompt": "x" * 300_000}),
        json.dumps({"messages": "nope"}),
        json.dumps({"prompt": "x", "unknown": True}),
    ]
    rss = []
    for round_ in (0, 1, 2):
        for i in range(1000):
            n = round_ * 1000 + i
            peer.publish(
                submit,
                kinds[i % len(kinds)],
                response_topic=f"bad/{n}",
                correlation=str(n).encode(),
            )
        wait_for(
            lambda r=round_: len(peer.on("bad/#")) >= 1000 * (r + 1),
            120,
            interval=0.5,
            what="an error reply for each",
        )
        rss.append(d.json("status")["rss_mb"])
    replies = peer.on("bad/#")
    assert len(replies) == 3000
    assert all(body["state"] == "rejected" for _, body, _, _ in replies)
    assert all(corr == topic.split("/")[1].encode() for topic, _, corr, _ in replies)
    codes = Counter(body["error"]["code"] for _, body, _, _ in replies)
    assert codes["payload_too_large"] == 300 and codes["invalid_request"] == 2700
    status = d.json("status")
    assert status["mqtt"]["rejected"] == 3000 and d.json("tasks", "list") == []
    # The first thousand warms everything up; after that, another thousand must not add memory.
    assert rss[2] - rss[1] < 3, rss
    assert d.proc.poll() is None and d.stop() == 0


def test_two_boxes_in_a_pool_run_each_task_once(
    daemons: Any, broker: Broker, peers: list[Peer]
) -> None:
    fake = FakeProvider(openai_stream("pooled"))
    try:
        extra = (
            "pool = 'farm'\n[local]\nenabled = false\n"
            "[providers.fake]\nkind = 'openai'\nmodel = 'gpt-4o-mini'\n"
            f"base_url = '{fake.url}/v1'\n"
        )
        boxes = [start_box(daemons, broker, f"box{i}", extra) for i in (1, 2)]
        peer = Peer(broker.port)
        peers.append(peer)
        peer.subscribe("pooled/#")
        for i in range(200):
            peer.publish(
                f"{PREFIX}/pool/farm/task/submit",
                {"id": f"p{i}", "prompt": "hi", "max_tokens": 4, "reply_to": f"pooled/{i}"},
            )
        wait_for(lambda: len(peer.on("pooled/#")) >= 200, 60, interval=0.5, what="200 results")
        time.sleep(1)  # room for a duplicate to show up
        got = Counter(body["id"] for _, body, _, _ in peer.on("pooled/#"))
        assert got == Counter({f"p{i}": 1 for i in range(200)})
        ran = [{t["id"] for t in b.json("tasks", "list", "--limit", "500")} for b in boxes]
        assert not ran[0] & ran[1] and len(ran[0] | ran[1]) == 200
        assert ran[0] and ran[1], "one box took everything"
        for b in boxes:
            b.proc.send_signal(signal.SIGTERM)
            assert b.proc.wait(30) == 0
    finally:
        fake.close()


def test_health_reports_and_home_assistant_discovery(
    daemons: Any, broker: Broker, peers: list[Peer]
) -> None:
    peer = Peer(broker.port)
    peers.append(peer)
    peer.subscribe(f"{PREFIX}/box1/health", "homeassistant/device/#")
    d = start_box(daemons, broker, extra="health_interval_s = 5\n")
    wait_for(lambda: peer.on(f"{PREFIX}/box1/health"), 20, what="a health report")
    health = peer.on(f"{PREFIX}/box1/health")[-1][1]
    for field in (
        "ts",
        "uptime_s",
        "version",
        "cpu_percent",
        "load_1m",
        "mem_percent",
        "mem_available_mb",
        "disk_free_mb",
        "temp_c",
        "queue",
        "tasks",
        "spend",
        "providers",
        "local",
        "mqtt_session",
    ):
        assert field in health, field
    assert health["spend"]["daily_cap_usd"] == 2.0 and health["queue"]["total"]["queued"] == 0
    assert health["tasks"] == {"succeeded_1h": 0, "failed_1h": 0}
    assert peer.expiry[f"{PREFIX}/box1/health"] == 10  # twice the interval

    [(topic, config, _, _)] = peer.on("homeassistant/device/#")
    assert topic == "homeassistant/device/agentbox_box1/config"
    late = Peer(broker.port)  # a Home Assistant that starts later still finds it: retained
    peers.append(late)
    late.subscribe("homeassistant/device/#")
    wait_for(lambda: late.on("homeassistant/device/#"), 5, what="the retained announcement")
    assert late.on("homeassistant/device/#")[0][3] is True
    assert config["dev"]["ids"] == ["agentbox_box1"]
    cmps = config["cmps"]
    assert cmps["agentbox_box1_online"]["p"] == "binary_sensor"
    assert cmps["agentbox_box1_cpu"]["state_topic"] == f"{PREFIX}/box1/health"
    assert cmps["agentbox_box1_cpu"]["availability"][0]["topic"] == f"{PREFIX}/box1/status"

    # Home Assistant restarting says so on its status topic: the box announces itself again.
    peer.publish("homeassistant/status", "online")
    wait_for(lambda: len(peer.on("homeassistant/device/#")) == 2, 10, what="a new announcement")
    d.cli("submit", "--wait", "--max-tokens", "4", "Say hi.")
    wait_for(
        lambda: peer.on(f"{PREFIX}/box1/health")[-1][1]["tasks"]["succeeded_1h"] == 1,
        20,
        what="health counting the task",
    )
    assert d.stop() == 0


def test_tls_with_client_certificate_and_password(daemons: Any, short_tmp: Path) -> None:
    pki = short_tmp / "pki"
    pki.mkdir()
    make_pki(pki)
    passwd = pki / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "box1", "right-password"],
        check=True,
        capture_output=True,
    )
    extra = (
        f"cafile {pki}/ca.crt\ncertfile {pki}/server.crt\nkeyfile {pki}/server.key\n"
        f"require_certificate true\npassword_file {passwd}\n"
    )
    b = Broker(short_tmp, extra=extra).start()
    b.conf.write_text(b.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    b.stop()
    b.start()
    try:
        config = mqtt_config(
            b.port,
            "box1",
            (
                f"username = 'box1'\ntls = true\nca_file = '{pki}/ca.crt'\n"
                f"cert_file = '{pki}/client.crt'\nkey_file = '{pki}/client.key'\n"
            ),
        )
        d = daemons(config, name="tls")
        d.cli("keys", "set", "mqtt", input="right-password\n")
        d.start()
        wait_for(lambda: d.json("status")["mqtt"]["connected"], 20, what="connected over TLS")
        assert d.stop() == 0

        d.cli("keys", "set", "mqtt", input="wrong-password\n")
        d.start()
        time.sleep(6)  # several reconnect attempts
        assert not d.json("status")["mqtt"]["connected"]
        refused = [line for line in d.log().splitlines() if "refused the login" in line]
        assert len(refused) == 1, refused  # one clear line, not one per retry
        assert "agentbox keys set mqtt" in refused[0], refused[0]
        assert "wrong-password" not in d.log() and "right-password" not in d.log()
        assert d.stop() == 0
    finally:
        b.stop()


def test_signed_submissions_when_signatures_are_required(
    daemons: Any, broker: Broker, peers: list[Peer]
) -> None:
    from agentbox.mqtt.signing import sign  # noqa: PLC0415

    secret = "shared-hmac-secret-123"
    d = daemons(mqtt_config(broker.port, "box1", "require_signature = true\n"), name="box1")
    d.cli("keys", "set", "mqtt-hmac", input=secret)
    d.start()
    wait_for(lambda: d.json("status")["mqtt"]["connected"], 20)
    peer = Peer(broker.port)
    peers.append(peer)
    peer.subscribe("signed/#")
    submit = f"{PREFIX}/box1/task/submit"

    def sig(key: str, ts: str, payload: bytes) -> str:
        return sign(key, submit, "box1", ts, payload)

    def send(name: str, payload: bytes, ts: str | None, signature: str | None) -> None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = f"signed/{name}"
        props.UserProperty = [(k, v) for k, v in (("ts", ts), ("signature", signature)) if v]
        peer.client.publish(submit, payload, qos=1, properties=props).wait_for_publish(10)

    body = json.dumps({"id": "s1", "prompt": "Say hi.", "max_tokens": 4}).encode()
    now = str(time.time())
    send("ok", body, now, sig(secret, now, body))
    send("unsigned", body, None, None)
    send("forged", body, now, sig("not-the-secret", now, body))
    old = str(time.time() - 3600)
    send("old", body, old, sig(secret, old, body))
    tampered = body.replace(b"Say hi.", b"Spend!!")
    send("tampered", tampered, now, sig(secret, now, body))
    wait_for(lambda: len(peer.on("signed/#")) == 5, 60, what="five answers")
    answers = {t.split("/")[1]: b for t, b, _, _ in peer.on("signed/#")}
    assert answers["ok"]["state"] == "succeeded"
    for name, why in (
        ("unsigned", "unsigned"),
        ("forged", "bad signature"),
        ("old", "away from now"),
        ("tampered", "bad signature"),
    ):
        assert answers[name]["state"] == "rejected" and why in answers[name]["error"]["message"]
    assert [t["id"] for t in d.json("tasks", "list")] == ["s1"]
    # The secret is read at start and on reload, not per request: a rotated one needs a reload.
    d.cli("keys", "set", "mqtt-hmac", input="rotated-hmac-secret-456")
    d.cli("reload")
    body2 = json.dumps({"id": "s2", "prompt": "Say hi.", "max_tokens": 4}).encode()
    now = str(time.time())
    send("stale", body2, now, sig(secret, now, body2))
    send("rotated", body2, now, sig("rotated-hmac-secret-456", now, body2))
    wait_for(lambda: len(peer.on("signed/#")) == 7, 60, what="two more answers")
    answers = {t.split("/")[1]: b for t, b, _, _ in peer.on("signed/#")}
    assert answers["stale"]["state"] == "rejected" and answers["rotated"]["state"] == "succeeded"
    # A schedule spends money too: the same signature guards it.
    schedule = {"name": "spend", "every_s": 60, "task": {"prompt": "Spend!!"}}
    peer.publish(f"{PREFIX}/box1/schedule/set", schedule, response_topic="signed/schedule")
    wait_for(lambda: peer.on("signed/schedule"), 30)
    [(_, refused, _, _)] = peer.on("signed/schedule")
    assert refused["state"] == "rejected" and "unsigned" in refused["error"]["message"]
    assert d.json("schedules", "list") == []
    assert d.stop() == 0


def test_schedules_over_mqtt_set_list_delete(
    daemons: Any, broker: Broker, peers: list[Peer]
) -> None:
    d = start_box(daemons, broker)
    peer = Peer(broker.port)
    peers.append(peer)
    peer.subscribe("sched/#", f"{PREFIX}/box1/info")
    wait_for(lambda: peer.on(f"{PREFIX}/box1/info"), 20)
    assert "schedules" in peer.on(f"{PREFIX}/box1/info")[0][1]["capabilities"]
    base = f"{PREFIX}/box1/schedule"
    spec = {"name": "daily", "cron": "0 7 * * *", "missed": "skip", "task": {"prompt": "News?"}}
    peer.publish(f"{base}/set", spec, response_topic="sched/set", correlation=b"c1")
    peer.publish(f"{base}/set", {**spec, "cron": "0 25 * * *"}, response_topic="sched/bad")
    peer.publish(f"{base}/list", {"reply_to": "sched/list"})  # a v3.1.1 client's way
    wait_for(lambda: len(peer.on("sched/#")) == 3, 30, what="three answers")
    [(_, made, corr, _)] = peer.on("sched/set")
    assert made["created"] is True and made["schedule"]["name"] == "daily" and corr == b"c1"
    assert made["schedule"]["next_at"] > time.time()
    [(_, bad, _, _)] = peer.on("sched/bad")
    assert bad["state"] == "rejected" and bad["error"]["code"] == "invalid_request"
    assert "bad cron expression" in bad["error"]["message"]
    [(_, listed, _, _)] = peer.on("sched/list")
    assert [s["name"] for s in listed["schedules"]] == ["daily"]
    assert d.json("schedules", "list")[0]["cron"] == "0 7 * * *"  # the bad one changed nothing
    peer.publish(f"{base}/delete", {"name": "daily"}, response_topic="sched/del")
    peer.publish(f"{base}/delete", {"name": "daily"}, response_topic="sched/del2")
    wait_for(lambda: peer.on("sched/del") and peer.on("sched/del2"), 30)
    assert peer.on("sched/del")[0][1] == {"deleted": "daily"}
    assert peer.on("sched/del2")[0][1]["error"]["code"] == "not_found"
    assert d.json("schedules", "list") == []
    assert d.stop() == 0


def test_a_new_broker_applies_without_a_restart(
    daemons: Any, broker: Broker, peers: list[Peer], short_tmp: Path
) -> None:
    """The console's broker_set: leave the old broker (stopped), connect to the new one."""
    (short_tmp / "b").mkdir()
    other = Broker(short_tmp / "b").start()
    try:
        d = start_box(daemons, broker)
        old_peer, new_peer = Peer(broker.port), Peer(other.port)
        peers += [old_peer, new_peer]
        status = f"{PREFIX}/box1/status"
        old_peer.subscribe(status)
        new_peer.subscribe(status)
        pid = d.proc.pid
        with ControlClient(d.state_dir / "control.sock") as c:
            reply = c.call("broker_test", mqtt={"port": other.port})
            assert reply["ok"] and f"connected to 127.0.0.1:{other.port}" in reply["message"]
            bad = c.call("broker_test", mqtt={"port": free_port()})
            assert not bad["ok"] and "nothing accepts MQTT" in bad["message"]
            with pytest.raises(ControlError, match=r"mqtt\.port"):
                c.call("broker_set", mqtt={"port": 0})
            c.call("broker_set", mqtt={"port": other.port})
        wait_for(lambda: any(b["state"] == "online" for _, b, _, _ in new_peer.on(status)), 20)
        wait_for(lambda: old_peer.on(status)[-1][1]["state"] == "stopped", 10)
        assert d.proc.pid == pid and d.json("status")["mqtt"]["broker"] == f"127.0.0.1:{other.port}"
        # Tasks now come and go through the new broker.
        new_peer.subscribe("replies/#")
        new_peer.publish(
            f"{PREFIX}/box1/task/submit",
            {"id": "after-move", "prompt": "Say hi.", "max_tokens": 8, "reply_to": "replies/x"},
        )
        wait_for(lambda: new_peer.on("replies/x"), 60, what="reply via the new broker")
        assert "mqtt.port" not in (d.state_dir / "settings.toml").read_text()
        assert f"port = {other.port}" in (d.state_dir / "settings.toml").read_text()
        # Turned off from the console: `stopped`, and the daemon goes on without a broker.
        with ControlClient(d.state_dir / "control.sock") as c:
            c.call("broker_set", mqtt={"enabled": False})
        wait_for(lambda: new_peer.on(status)[-1][1]["state"] == "stopped", 10)
        assert d.json("status")["mqtt"] == {"enabled": False}
        done = d.json("submit", "--wait", "--json", "--tier", "local", "--max-tokens", "4", "hi")
        assert done["state"] == "succeeded"
        assert d.stop() == 0
    finally:
        other.stop()


def test_an_agent_task_over_mqtt_shows_its_steps_as_progress_events(
    daemons: Any, broker: Broker, peers: list[Peer], fake: FakeProvider
) -> None:
    fake.push(
        tool_calls("openai", ("calculator", {"expression": "6 * 7"})),
        openai_stream("It is 42."),
    )
    provider = f"[providers.main]\nkind = 'openai'\nbase_url = '{fake.url}/v1'\nmodel = 'm'\n"
    start_box(daemons, broker, extra=provider)
    peer = Peer(broker.port)
    peers.append(peer)
    base = f"{PREFIX}/box1"
    peer.subscribe("replies/#", f"{base}/task/+/event", f"{base}/info")
    wait_for(lambda: peer.on(f"{base}/info"), 10)
    info = peer.on(f"{base}/info")[0][1]
    assert "agent" in info["capabilities"] and info["tools"] == sorted(TOOL_NAMES)
    spec = {"id": "ag", "prompt": "6 times 7?", "kind": "agent", "tools": ["calculator"]}
    peer.publish(f"{base}/task/submit", spec, response_topic="replies/ag", correlation=b"c")
    wait_for(lambda: peer.on("replies/ag"), 30)
    [(_, reply, corr, _)] = peer.on("replies/ag")
    assert reply["output"] == "It is 42." and reply["steps"] == 2 and corr == b"c"
    assert reply["tool_calls"] == [
        {"step": 1, "tool": "calculator", "arguments": '{"expression":"6 * 7"}'}
    ]
    events = [body for _, body, _, _ in peer.on(f"{base}/task/ag/event")]
    assert [e["event"] for e in events][:2] == ["accepted", "running"]
    assert events[-1]["event"] == "result"
    steps = [e["info"] for e in events if e["event"] == "progress"]
    assert steps == [
        {"step": 1, "phase": "thinking"},
        {"step": 1, "phase": "tool", "tool": "calculator"},
        {"step": 2, "phase": "thinking"},
    ]
