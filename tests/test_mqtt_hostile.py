"""Hostile broker users and an unlucky broker, against real daemons and a real Mosquitto:
a graceful broker restart under load, a flood of junk, replayed signatures, response topics
aimed at other boxes; and a broker of our own that ignores the box's Receive Maximum."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentbox.mqtt import intake
from agentbox.mqtt.signing import sign
from tests.conftest import wait_for
from tests.fake_broker import RudeBroker, publish_packet
from tests.fakes import FakeProvider
from tests.mqtt_peer import Broker, Peer

PREFIX = "agentbox/v1"
SUBMIT = f"{PREFIX}/box1/task/submit"
SECRET = "shared-hmac-secret-123"
WINDOW = intake.RECEIVE_MAXIMUM
QUOTA_EXCEEDED = 0x97
# A fixed mmap threshold stops glibc from moving freed payloads onto the heap, so the peak RSS
# measures what the daemon held, not what the allocator kept.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "2"}
# Peak RSS growth allowed under a flood of 250 kB messages: what the box may hold by design
# (64 QoS 1 payloads, 16 QoS 0 queued, 64 being handled: 36 MB) plus a little.
FLAT_MB = 40


@pytest.fixture
def rude() -> Iterator[RudeBroker]:
    b = RudeBroker()
    yield b
    b.close()


@pytest.fixture
def cloud() -> Iterator[str]:
    """Config for a box that runs tasks on a fake cloud provider only (quick, no model)."""
    fake = FakeProvider()
    yield (
        "[local]\nenabled = false\n"
        f"[providers.fake]\nkind = 'openai'\nmodel = 'gpt-4o-mini'\nbase_url = '{fake.url}/v1'\n"
    )
    fake.close()


def box_config(port: int, device: str, mqtt: str = "", rest: str = "") -> str:
    return f"[device]\nid = '{device}'\n[mqtt]\nhost = '127.0.0.1'\nport = {port}\n{mqtt}{rest}"


def signed_box(daemons: Any, port: int, cloud: str) -> Any:
    """box1 on the broker at port, requiring signatures with SECRET."""
    config = box_config(port, "box1", "require_signature = true\n", cloud)
    return start_box(daemons, config, "box1", SECRET)


def start_box(daemons: Any, config: str, name: str, secret: str | None = None, **kw: Any) -> Any:
    d = daemons(config, name=name, **kw)
    if secret:
        d.cli("keys", "set", "mqtt-hmac", input=secret)
    d.start()
    wait_for(lambda: d.json("status")["mqtt"]["connected"], 20, what="mqtt connected")
    return d


def signed(topic: str, device: str, payload: bytes, ts: str | None = None) -> list[tuple[str, str]]:
    ts = ts or str(time.time())
    return [("ts", ts), ("signature", sign(SECRET, topic, device, ts, payload))]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_graceful_broker_restart_under_load_leaves_intake_working(
    daemons: Any, broker: Broker, peers: list[Peer]
) -> None:
    d = start_box(daemons, box_config(broker.port, "box1"), "box1")
    peer = Peer(broker.port)
    peer.subscribe("load/#")
    get = f"{PREFIX}/box1/task/get"
    n = 3000
    for i in range(n):  # each is answered `not_found` at once: many answers in flight
        peer.publish(get, {"id": "nope"}, response_topic=f"load/{i}", wait=False)
    # Stop the broker (SIGTERM: a clean shutdown) while the box is answering the burst: paused
    # first, so that answers wait for their PUBACKs when the stop comes.
    wait_for(lambda: len(peer.on("load/#")) >= 300, 60, interval=0.01, what="answers flowing")
    assert broker.proc is not None
    os.kill(broker.proc.pid, signal.SIGSTOP)
    time.sleep(1)  # the box takes what is already on its socket, and answers into the pause
    broker.proc.terminate()
    os.kill(broker.proc.pid, signal.SIGCONT)
    broker.stop()
    answered_before = len(peer.on("load/#"))
    peer.close()  # its unsent requests would fill the restarted broker's queue for the box
    broker.start()
    after = Peer(broker.port)
    peers.append(after)
    after.subscribe("after/#")

    def back() -> bool:
        mqtt = d.json("status")["mqtt"]
        return bool(mqtt["connected"] and mqtt["session"] > 1)

    wait_for(back, 90, interval=0.5, what="box back")  # its backoff may have grown meanwhile
    time.sleep(1)  # the box's subscriptions are made after its status says connected
    for i in range(200):
        after.publish(get, {"id": "nope"}, response_topic=f"after/{i}", wait=False)
    wait_for(
        lambda: len(after.on("after/#")) >= 200, 60, interval=0.2, what="answers after the restart"
    )
    got = Counter(t for t, *_ in after.on("after/#"))
    assert got == Counter({f"after/{i}": 1 for i in range(200)})
    print(
        f"\n{n} gets sent, {answered_before} answered before the broker stopped;"
        " after the restart 200/200 answered"
    )
    assert d.stop() == 0


def test_a_flood_of_junk_keeps_memory_and_the_log_flat(
    daemons: Any, broker: Broker, peers: list[Peer], cloud: str
) -> None:
    config = box_config(broker.port, "box1", "require_signature = true\n", cloud)
    d = start_box(daemons, config, "box1", SECRET, env=MALLOC)
    peer = Peer(broker.port)
    peers.append(peer)
    peer.subscribe("ok/#")
    submit = SUBMIT
    start_mb = peak_rss_mb(d.proc.pid)
    junk = b"x" * 250_000
    for i in range(2000):  # unsigned junk of 250 kB, half QoS 1 and half QoS 0
        peer.publish(submit, junk, qos=i % 2, wait=False)
    peer.client.publish("drain/marker", b"", qos=1).wait_for_publish(120)
    # Until the broker has nothing more for the box (it drops what its queue for the box cannot
    # hold): valid work sent into a full broker queue would be dropped by the broker itself.
    wait_for(settled(d, "received"), 180, interval=2, what="the flood taken")
    for i in range(5):  # valid work after the flood is still answered
        body = json.dumps({"id": f"ok{i}", "prompt": "hi", "max_tokens": 4}).encode()
        peer.publish(submit, body, response_topic=f"ok/{i}", user=signed(submit, "box1", body))
    wait_for(lambda: len(peer.on("ok/#")) == 5, 180, interval=0.5, what="the valid tasks")
    assert all(b["state"] == "succeeded" for _, b, _, _ in peer.on("ok/#"))
    peak_mb = peak_rss_mb(d.proc.pid)
    refused = [line for line in d.log().splitlines() if "rejected" in line or "refused" in line]
    print(
        f"\npeak RSS {start_mb:.0f} -> {peak_mb:.0f} MB over 2000 x 250 kB of junk;"
        f" {len(refused)} log lines about it"
    )
    # Before the window: +19 to +163 MB (as far as Mosquitto 2.0.11 overshot the Receive
    # Maximum); before the Receive Maximum: +290 MB and 1,770 log lines.
    assert peak_mb - start_mb < FLAT_MB, (start_mb, peak_mb)
    assert len(refused) <= 20, refused[:30]
    assert d.stop() == 0


def test_signatures_bind_topic_and_box_and_are_not_replayed(
    daemons: Any, broker: Broker, peers: list[Peer], cloud: str
) -> None:
    d = signed_box(daemons, broker.port, cloud)
    peer = Peer(broker.port)
    peers.append(peer)
    peer.subscribe("s/#")
    base = f"{PREFIX}/box1"
    submit = f"{base}/task/submit"

    body = json.dumps({"prompt": "Spend!", "max_tokens": 4}).encode()  # no id
    props = signed(submit, "box1", body)
    for i in range(3):  # the same signed message, three times
        peer.publish(submit, body, response_topic=f"s/again{i}", user=props)
    wait_for(lambda: peer.on("s/again0"), 60, what="the first answer")
    time.sleep(1)  # room for more answers
    assert len(d.json("tasks", "list")) == 1, "a replay made another paid task"
    assert [t for t, *_ in peer.on("s/#")] == ["s/again0"]

    def refused(name: str, topic: str, payload: bytes, user: list[tuple[str, str]] | None) -> str:
        peer.publish(topic, payload, response_topic=f"s/{name}", user=user)
        wait_for(lambda: peer.on(f"s/{name}"), 30, what=name)
        answer = peer.on(f"s/{name}")[0][1]
        assert answer["state"] == "rejected", answer
        return str(answer["error"]["message"])

    fresh = json.dumps({"id": "f1", "prompt": "hi", "max_tokens": 4}).encode()
    other = f"{PREFIX}/box2/task/submit"
    assert "bad signature" in refused("box2", submit, fresh, signed(other, "box2", fresh))
    assert "bad signature" in refused("dev", submit, fresh, signed(submit, "box2", fresh))
    nan = [("ts", "nan"), ("signature", sign(SECRET, submit, "box1", "nan", fresh))]
    assert "not a Unix time" in refused("nan", submit, fresh, nan)
    get = json.dumps({"id": "f1"}).encode()
    for op, payload in (("task/get", get), ("task/cancel", get), ("schedule/list", b"{}")):
        assert "unsigned" in refused(op.replace("/", "-"), f"{base}/{op}", payload, None)
    user = signed(f"{base}/task/get", "box1", get)
    peer.publish(f"{base}/task/get", get, response_topic="s/get", user=user)
    wait_for(lambda: peer.on("s/get"), 30, what="a signed get")
    assert peer.on("s/get")[0][1]["error"]["code"] == "not_found"
    [task] = d.json("tasks", "list")
    assert task["id"].startswith("sig-")
    assert d.stop() == 0


def test_answers_never_reach_box_topics_home_assistant_or_unlisted_topics(
    daemons: Any, broker: Broker, peers: list[Peer], cloud: str
) -> None:
    mqtt = "reply_allow = ['replies/#', 'apps/+/answers']\n"
    d = start_box(daemons, box_config(broker.port, "box1", mqtt, cloud), "box1")
    peer = Peer(broker.port)
    peers.append(peer)
    peer.subscribe(f"{PREFIX}/#", "homeassistant/#", "replies/#", "apps/#", "other/#")
    submit = f"{PREFIX}/box1/task/submit"
    aimed = {
        "box2": f"{PREFIX}/box2/task/cancel",
        "own": f"{PREFIX}/box1/status",
        "ha": "homeassistant/device/agentbox_box2/config",
        "sys": "$SYS/broker/x",
        "wild": "replies/#",
        "unlisted": "other/topic",
    }
    for name, topic in aimed.items():
        if name != "wild":  # the broker itself refuses a Response Topic with a wildcard
            peer.publish(submit, {"id": f"v5-{name}", "prompt": "hi"}, response_topic=topic)
        peer.publish(submit, {"id": f"v3-{name}", "prompt": "hi", "reply_to": topic})
    fine = {"id": "fine", "prompt": "hi", "max_tokens": 4}
    peer.publish(submit, fine, response_topic="apps/a/answers")
    wanted = [f"v3-{n}" for n in aimed] + [f"v5-{n}" for n in aimed if n != "wild"]
    wait_for(
        lambda: (
            all(peer.on(f"{PREFIX}/box1/task/{i}/result") for i in wanted)
            and peer.on("apps/a/answers")
        ),
        60,
        what="every refusal on its default result topic",
    )
    for i in wanted:
        [(_, answer, _, _)] = peer.on(f"{PREFIX}/box1/task/{i}/result")
        assert answer["state"] == "rejected" and answer["error"]["code"] == "invalid_request"
        assert "response topic" in answer["error"]["message"], answer
    assert peer.on("apps/a/answers")[0][1]["state"] == "succeeded"
    assert peer.on(f"{PREFIX}/box2/#") == []
    assert peer.on("homeassistant/device/agentbox_box2/#") == []
    assert all("id" not in body for _, body, _, _ in peer.on(f"{PREFIX}/box1/status"))
    assert peer.on("other/#") == [] and peer.on("replies/#") == []
    assert [t["id"] for t in d.json("tasks", "list")] == ["fine"]
    d.stop(signal.SIGTERM)


def settled(d: Any, field: str) -> Any:
    """A predicate for wait_for: true once the box's mqtt `field` stopped changing."""
    seen = [-1]

    def check() -> bool:
        value = int(d.json("status")["mqtt"][field])
        done, seen[0] = value == seen[0], value
        return done

    return check


def held_gets(rude: RudeBroker, n: int) -> tuple[list[int], list[bytes]]:
    """Signed gets whose answers the broker holds back: they keep the box's handlers busy."""
    rude.hold_prefix = "replies/"
    get, mids = f"{PREFIX}/box1/task/get", rude.mids(n)
    packets = []
    for i, mid in enumerate(mids):
        body = json.dumps({"id": f"r{i}"}).encode()
        user = signed(get, "box1", body)
        packets.append(publish_packet(get, body, mid, 1, f"replies/{i}", b"c%d" % i, user))
    return mids, packets


def test_a_broker_past_the_receive_maximum_cannot_fill_memory(
    daemons: Any, rude: RudeBroker, cloud: str
) -> None:
    config = box_config(rude.port, "box1", "require_signature = true\n", cloud)
    d = start_box(daemons, config, "box1", SECRET, env=MALLOC)
    mids, window = held_gets(rude, WINDOW)
    rude.push(window)
    wait_for(lambda: len(rude.answers("replies/")) == WINDOW, 60, what="the window full")
    n, junk = 600, b"x" * 250_000
    junk_mids = rude.mids(n)
    start_mb = peak_rss_mb(d.proc.pid)
    rude.push([publish_packet(SUBMIT, junk, m) for m in junk_mids])  # unsigned, unanswerable
    wait_for(settled(d, "rejected"), 120, interval=1, what="the junk taken")
    peak_mb = peak_rss_mb(d.proc.pid)
    rude.release()
    wait_for(lambda: len(rude.acks) == WINDOW + n, 60, what="every delivery acknowledged")
    codes = [code for _, code in rude.acks]
    print(
        f"\npeak RSS {start_mb:.0f} -> {peak_mb:.0f} MB with {n} x 250 kB pushed past the"
        f" Receive Maximum; PUBACK reason codes {dict(Counter(codes))}"
    )
    # Before the fix every one was queued with its payload (+150 MB) and acknowledged 0x00.
    assert [mid for mid, _ in rude.acks] == mids + junk_mids, "PUBACKs out of order"
    assert codes == [0] * WINDOW + [QUOTA_EXCEEDED] * n, Counter(codes)
    assert peak_mb - start_mb < FLAT_MB, (start_mb, peak_mb)
    assert len(rude.answers("replies/")) == WINDOW
    assert d.stop() == 0


def test_qos2_past_the_receive_maximum_is_refused_before_paho_keeps_it(
    daemons: Any, rude: RudeBroker, cloud: str
) -> None:
    d = start_box(daemons, box_config(rude.port, "box1", rest=cloud), "box1", env=MALLOC)
    n, junk = 300, b"x" * 250_000
    mids = rude.mids(n)
    start_mb = peak_rss_mb(d.proc.pid)
    # QoS 2 never released (no PUBREL): paho keeps each payload it sent a PUBREC for.
    rude.push([publish_packet(SUBMIT, junk, m, qos=2) for m in mids])
    wait_for(lambda: len(rude.recs) == n, 60, what="a PUBREC for each")
    peak_mb = peak_rss_mb(d.proc.pid)
    codes = [code for _, code in rude.recs]
    print(f"\npeak RSS {start_mb:.0f} -> {peak_mb:.0f} MB; PUBREC codes {dict(Counter(codes))}")
    assert codes == [0] * WINDOW + [QUOTA_EXCEEDED] * (n - WINDOW), Counter(codes)
    assert [mid for mid, _ in rude.recs] == mids
    assert peak_mb - start_mb < FLAT_MB, (start_mb, peak_mb)
    assert d.stop() == 0


def test_requests_past_the_receive_maximum_get_one_final_busy_answer(
    daemons: Any, rude: RudeBroker, cloud: str
) -> None:
    d = signed_box(daemons, rude.port, cloud)
    n = WINDOW + 16
    _, packets = held_gets(rude, WINDOW)
    prompt = "x" * (intake.OVERFLOW_PACKET + 1)  # past the window, and too large to hold
    # Valid signed submissions, answered on a Response Topic or on their `reply_to`; and the
    # last two (with Response Topics: the box reads neither's payload) get the rejection the
    # box gives when it is not busy.
    expected = {i: "busy" for i in range(WINDOW, n - 2)}
    expected |= {n - 2: "payload_too_large", n - 1: "invalid_request"}
    v3 = {i for i in range(WINDOW, n - 2) if i % 2}
    for i, mid in zip(range(WINDOW, n), rude.mids(n - WINDOW), strict=True):
        spec = {"id": f"r{i}", "prompt": prompt * (20 if i == n - 2 else 1), "max_tokens": 4}
        if i in v3:
            spec["reply_to"] = f"replies/{i}"
        body = json.dumps(spec).encode()
        user = signed(SUBMIT, "box2" if i == n - 1 else "box1", body)
        topic, corr = (None, None) if i in v3 else (f"replies/{i}", b"c%d" % i)
        packets.append(publish_packet(SUBMIT, body, mid, 1, topic, corr, user))
    rude.push(packets)
    wait_for(lambda: len(rude.answers("replies/")) >= n, 60, what="an answer to each")
    rude.release()
    wait_for(lambda: len(rude.acks) == n, 60, what="every delivery acknowledged")
    time.sleep(1)  # room for a second answer
    answers = {p.topic.decode(): p for p in rude.answers("replies/")}
    assert len(answers) == len(rude.answers("replies/")) == n, "a request answered twice"
    for i in range(n):
        p = answers[f"replies/{i}"]
        body = json.loads(p.payload)
        corr = getattr(p.properties, "CorrelationData", None)
        assert corr == (None if i in v3 else b"c%d" % i), (i, corr)
        # The held task/gets name unknown tasks: `not_found`, the others are refused.
        assert body["state"] == ("rejected" if i in expected else "not_found"), body
        assert body["error"]["code"] == expected.get(i, "not_found"), body
        assert body["id"] == (None if i >= n - 2 else f"r{i}"), body
    assert [code for _, code in rude.acks] == [0] * WINDOW + [QUOTA_EXCEEDED] * (n - WINDOW)
    assert d.json("tasks", "list") == [], "a refused submission made a task"
    assert d.stop() == 0


def test_a_redelivery_past_the_receive_maximum_of_a_known_task_is_not_answered_busy(
    daemons: Any, rude: RudeBroker, cloud: str
) -> None:
    d = start_box(daemons, box_config(rude.port, "box1", rest=cloud), "box1")
    spec = {"id": "k1", "prompt": "x" * (intake.OVERFLOW_PACKET + 1), "max_tokens": 4}
    body = json.dumps(spec).encode()
    first, dup, again = rude.mids(3)
    rude.push([publish_packet(SUBMIT, body, first, 1, "done/k1")])
    wait_for(lambda: rude.answers("done/k1"), 60, what="the task's result")
    _, packets = held_gets(rude, WINDOW)
    packets.append(publish_packet(SUBMIT, body, dup, 1, "replies/dup", dup=True))
    packets.append(publish_packet(SUBMIT, body, again, 1, "replies/again"))  # sent anew
    rude.push(packets)
    wait_for(lambda: rude.answers("replies/again"), 60, what="the busy answer")
    rude.release()
    wait_for(lambda: len(rude.acks) == WINDOW + 3, 60, what="every delivery acknowledged")
    time.sleep(1)  # room for an answer to the redelivery
    assert json.loads(rude.answers("replies/again")[0].payload)["error"]["code"] == "busy"
    assert rude.answers("replies/dup") == [], "a second answer to a request already answered"
    assert [c for _, c in rude.acks] == [0] * (1 + WINDOW) + [QUOTA_EXCEEDED] * 2
    assert d.stop() == 0


def test_a_burst_larger_than_the_window_is_answered_in_full_once(
    daemons: Any, broker: Broker, peers: list[Peer], cloud: str
) -> None:
    d = signed_box(daemons, broker.port, cloud)
    peer = Peer(broker.port)
    peers.append(peer)
    peer.subscribe("burst/#")
    n = 300
    for i in range(n):  # all at once (Mosquitto 2.0.11 sends past the Receive Maximum here)
        body = json.dumps({"id": f"b{i}", "prompt": "hi", "max_tokens": 4}).encode()
        user = signed(SUBMIT, "box1", body)
        peer.publish(SUBMIT, body, response_topic=f"burst/{i}", user=user, wait=False)
    wait_for(lambda: len(peer.on("burst/#")) >= n, 180, interval=0.5, what="every answer")
    time.sleep(1)  # room for a second answer
    got = Counter(t for t, *_ in peer.on("burst/#"))
    assert got == Counter({f"burst/{i}": 1 for i in range(n)})
    assert all(b["state"] == "succeeded" for _, b, _, _ in peer.on("burst/#"))
    assert d.json("status")["mqtt"]["rejected"] == 0
    print(f"\n{n} signed submissions at once: {n} answered, each once, none refused")
    assert d.stop() == 0
