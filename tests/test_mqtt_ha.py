"""Home Assistant and integrators over a real Mosquitto: what issue 15 found, each point a test.

The Home Assistant rules the payloads follow are named in each test (its MQTT integration,
homeassistant/components/mqtt, and the sensor recorder, homeassistant/components/sensor/
recorder.py); scripts/ha-check runs a real Home Assistant against a box.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any

from agentbox.mqtt.topics import reply_refusal
from tests.conftest import wait_for
from tests.fakes import FakeProvider, Reply, openai_stream
from tests.mqtt_peer import Broker, Peer
from tests.test_mqtt import PREFIX, start_box

BASE = f"{PREFIX}/box1"
CONFIG = "homeassistant/device/agentbox_box1/config"


def peer_on(broker: Broker, peers: list[Peer], *topics: str) -> Peer:
    peer = Peer(broker.port)
    peers.append(peer)
    peer.subscribe(*topics)
    return peer


def test_birth_resends_discovery_and_health_at_once_and_health_is_retained(
    daemons: Any, broker: Broker, peers: list[Peer]
) -> None:
    """Point 1: after a Home Assistant restart the sensors must not read `unknown` for an
    interval. The interval here is an hour, so any second report is the birth's."""
    peer = peer_on(broker, peers, f"{BASE}/health", CONFIG)
    d = start_box(daemons, broker, extra="health_interval_s = 3600\n")
    wait_for(lambda: peer.on(f"{BASE}/health") and peer.on(CONFIG), 20, what="first reports")
    assert peer.expiry[f"{BASE}/health"] == 7200  # the expiry bounds a retained report's age

    # Home Assistant subscribing after its restart reads the last report from the broker.
    late = peer_on(broker, peers, f"{BASE}/health")
    wait_for(lambda: late.on(f"{BASE}/health"), 10, what="the retained health report")
    assert late.on(f"{BASE}/health")[0][3] is True

    peer.publish("homeassistant/status", "online")  # Home Assistant's birth message
    wait_for(lambda: len(peer.on(CONFIG)) == 2, 10, what="discovery sent again")
    wait_for(lambda: len(peer.on(f"{BASE}/health")) == 2, 10, what="health at once")
    peer.publish("homeassistant/status", "offline")  # its last will: nothing to do
    assert d.stop() == 0
    assert len(peer.on(CONFIG)) == 2 and len(peer.on(f"{BASE}/health")) == 2


def test_a_resent_id_gets_one_answer_the_final_result(
    daemons: Any, broker: Broker, peers: list[Peer]
) -> None:
    """Point 2: retry-after-timeout with the same id, while the task runs and after it ended."""
    gate = threading.Event()
    fake = FakeProvider()

    def answer(_: dict[str, Any]) -> Reply:
        gate.wait(120)  # the task stays running until the resends are in
        return openai_stream("the final answer")

    fake.answer = answer
    try:
        provider = f"[providers.main]\nkind = 'openai'\nbase_url = '{fake.url}/v1'\nmodel = 'm'\n"
        d = start_box(daemons, broker, extra=provider)
        peer = peer_on(broker, peers, "replies/#", f"{BASE}/task/+/result", f"{BASE}/task/+/event")
        spec = {"id": "slow", "prompt": "hi", "model": "main/m"}
        submit = f"{BASE}/task/submit"
        peer.publish(submit, spec, response_topic="replies/first", correlation=b"1")
        wait_for(
            lambda: any(b["event"] == "running" for _, b, _, _ in peer.on(f"{BASE}/task/+/event")),
            30,
            what="the task running",
        )
        # Several resends in flight: two new targets, one twice (same topic and Correlation
        # Data: the integrator cannot tell two copies apart), one without a reply target.
        peer.publish(submit, spec, response_topic="replies/second", correlation=b"2")
        peer.publish(submit, spec, response_topic="replies/third", correlation=b"3")
        peer.publish(submit, spec, response_topic="replies/third", correlation=b"3")
        peer.publish(submit, {**spec, "prompt": "other text, same id"})

        def waiting() -> int:
            with d.db() as db:
                (raw,) = db.execute("SELECT reply FROM tasks WHERE id = 'slow'").fetchone()
            return len(json.loads(raw)) if raw.startswith("[") else 1

        wait_for(lambda: waiting() == 4, 20, what="the resends recorded")
        assert peer.on("replies/#") == [] and peer.on(f"{BASE}/task/slow/result") == []
        gate.set()
        wait_for(lambda: len(peer.on("replies/#")) == 3, 60, what="three answers")
        wait_for(lambda: peer.on(f"{BASE}/task/slow/result"), 10, what="the default topic's")
        answers = {t: (b, c) for t, b, c, _ in peer.on("replies/#")}
        for topic, corr in (("first", b"1"), ("second", b"2"), ("third", b"3")):
            body, got = answers[f"replies/{topic}"]
            assert body["state"] == "succeeded" and body["output"] == "the final answer"
            assert got == corr
        [(_, default, _, _)] = peer.on(f"{BASE}/task/slow/result")
        assert default["state"] == "succeeded"

        # After it ended: answered at once with the stored final result, run nothing again.
        peer.publish(submit, spec, response_topic="replies/late", correlation=b"4")
        wait_for(lambda: peer.on("replies/late"), 10, what="the late answer")
        [(_, late, corr, _)] = peer.on("replies/late")
        assert late["output"] == "the final answer" and late["attempts"] == 1 and corr == b"4"
        assert len(peer.on("replies/#")) == 4 and len(peer.on(f"{BASE}/task/slow/result")) == 1
        assert len(fake.requests) == 1
        assert d.stop() == 0
    finally:
        gate.set()
        fake.close()


def test_discovery_payload_follows_home_assistant_rules(
    daemons: Any, broker: Broker, peers: list[Peer]
) -> None:
    """Points 3, 4 and 8, checked on the discovery and health messages the box sends."""
    peer = peer_on(broker, peers, CONFIG, f"{BASE}/health")
    d = start_box(daemons, broker)
    wait_for(lambda: peer.on(CONFIG) and peer.on(f"{BASE}/health"), 20, what="discovery")
    config = peer.on(CONFIG)[0][1]
    health = peer.on(f"{BASE}/health")[0][1]
    cmps = config["cmps"]

    # homeassistant/components/mqtt: in device discovery an entity reads `qos` (and
    # availability) from its own component config; the top-level value is not inherited.
    assert all(c["qos"] == 1 for c in cmps.values())

    # zigbee2mqtt's bridge "Connection state": the connectivity sensor reads the status
    # topic itself and has no availability, so it reads off instead of unavailable.
    online = cmps["agentbox_box1_online"]
    assert "availability" not in online and "availability" not in config
    assert online["entity_category"] == "diagnostic" and online["device_class"] == "connectivity"
    for key in ("cpu", "load", "mem", "disk", "temp"):
        assert cmps[f"agentbox_box1_{key}"]["entity_category"] == "diagnostic", key
    for key in ("queued", "running", "spend_today"):
        assert "entity_category" not in cmps[f"agentbox_box1_{key}"], key
    for key, c in cmps.items():
        if key != "agentbox_box1_online":
            assert c["availability"][0]["topic"] == f"{BASE}/status", key

    # homeassistant/components/sensor: device_class monetary allows state_class `total` only;
    # homeassistant/components/sensor/recorder.py starts a new cycle (no negative sum) when
    # `last_reset` changes, so each spend sensor reads it, and it must be a time with its UTC
    # offset (Home Assistant refuses a naive one).
    for key, amount, since in (
        ("spend_today", "today_usd", "today_since"),
        ("spend_month", "month_usd", "month_since"),
    ):
        c = cmps[f"agentbox_box1_{key}"]
        assert (c["device_class"], c["state_class"]) == ("monetary", "total")
        assert c["value_template"] == "{{ value_json.spend." + amount + " }}"
        assert c["last_reset_value_template"] == "{{ value_json.spend." + since + " }}"
        start = datetime.fromisoformat(health["spend"][since])
        assert start.tzinfo is not None and start.timestamp() <= health["ts"]
    assert datetime.fromisoformat(health["spend"]["today_since"]).hour == 0
    assert datetime.fromisoformat(health["spend"]["month_since"]).day == 1
    assert d.stop() == 0


def test_discovery_off_clears_the_config_and_the_prefix_is_configurable(
    daemons: Any, broker: Broker, peers: list[Peer]
) -> None:
    """Point 7: an empty retained config removes the device; another prefix and its birth."""
    d = start_box(daemons, broker)
    peer = peer_on(broker, peers, CONFIG)
    wait_for(lambda: peer.on(CONFIG), 10, what="the retained config")
    assert d.stop() == 0

    d.config_path.write_text(d.config_path.read_text() + "ha_discovery = false\n")
    d.start()
    wait_for(lambda: peer.on(CONFIG)[-1][1] == "", 20, what="the empty config")
    assert peer.on(CONFIG)[-1][3] is False  # a live empty message: it is not kept
    gone = peer_on(broker, peers, CONFIG)  # nothing retained is left for a new subscriber
    assert d.stop() == 0
    assert gone.on(CONFIG) == []

    other = "ha2/device/agentbox_box1/config"
    d.config_path.write_text(
        d.config_path.read_text().replace("ha_discovery = false", "discovery_prefix = 'ha2'")
    )
    d.start()
    watch = peer_on(broker, peers, other, "ha2/status", CONFIG)
    wait_for(lambda: watch.on(other), 20, what="the config under ha2/")
    watch.publish("homeassistant/status", "online")  # not this Home Assistant: ignored
    watch.publish("ha2/status", "online")
    wait_for(lambda: len(watch.on(other)) == 2, 10, what="announced again on ha2/status")
    assert watch.on(CONFIG) == []
    assert d.stop() == 0
    assert len(watch.on(other)) == 2


def test_will_accepted_event_get_unknown_and_empty_schedule_list(
    daemons: Any, broker: Broker, peers: list[Peer]
) -> None:
    """Point 9: each message says only what is true."""
    peer = peer_on(broker, peers, f"{BASE}/status", f"{BASE}/task/+/event", "replies/#")
    d = start_box(daemons, broker)
    peer.publish(
        f"{BASE}/task/submit", {"id": "t1", "prompt": "Say hi.", "max_tokens": 4, "tier": "local"}
    )
    wait_for(lambda: len(peer.on(f"{BASE}/task/t1/event")) == 3, 120, what="three events")
    accepted, running, result = (b for _, b, _, _ in peer.on(f"{BASE}/task/t1/event"))
    # It started in the transaction that took it: `accepted` still shows it taken in, and
    # names the model its run reports, not a placeholder.
    assert accepted["event"] == "accepted" and accepted["state"] == "queued"
    assert accepted["attempts"] == 0 and accepted["timings"] == {}
    assert running["state"] == "running" and running["attempts"] == 1
    assert accepted["route"]["model"] == result["route"]["model"] != "default"

    peer.publish(f"{BASE}/task/get", {"id": "nope"}, response_topic="replies/get")
    peer.publish(f"{BASE}/task/cancel", {"id": "nope"}, response_topic="replies/cancel")
    peer.publish(f"{BASE}/schedule/list", "", response_topic="replies/list")
    wait_for(lambda: len(peer.on("replies/#")) == 3, 20, what="three answers")
    for name in ("get", "cancel"):
        [(_, body, _, _)] = peer.on(f"replies/{name}")
        assert body["state"] == "not_found" and body["error"]["code"] == "not_found", body
    [(_, listed, _, _)] = peer.on("replies/list")
    assert listed == {"schedules": []}

    online = peer.on(f"{BASE}/status")[-1][1]
    d.kill9()
    wait_for(lambda: peer.on(f"{BASE}/status")[-1][1]["state"] == "offline", 10, what="will")
    will = peer.on(f"{BASE}/status")[-1][1]
    # The broker sends the will when the box dies, a time the will cannot hold: no `ts`.
    assert "ts" not in will and will["session"] == online["session"]
    assert will["connected_at"] <= online["ts"]


def test_a_reload_that_moves_or_ends_discovery_clears_the_old_config(
    daemons: Any, broker: Broker, peers: list[Peer]
) -> None:
    """Point 7 on `agentbox reload`: the old retained config is cleared before the box leaves
    it (the next connection announces only under the new prefix, or nowhere)."""
    d = start_box(daemons, broker)
    other = "ha2/device/agentbox_box1/config"
    peer = peer_on(broker, peers, CONFIG, other)
    wait_for(lambda: peer.on(CONFIG), 10, what="the retained config")
    d.config_path.write_text(d.config_path.read_text() + "discovery_prefix = 'ha2'\n")
    d.cli("reload")
    wait_for(lambda: peer.on(other), 20, what="the config under ha2/")
    assert peer.on(CONFIG)[-1][1] == ""
    d.config_path.write_text(d.config_path.read_text() + "ha_discovery = false\n")
    d.cli("reload")
    wait_for(lambda: peer.on(other)[-1][1] == "", 20, what="ha2's config cleared")
    assert d.stop() == 0
    assert peer_on(broker, peers, CONFIG, other).on("#") == []


def test_answers_never_reach_the_configured_discovery_prefix() -> None:
    """An answer published with the box's broker rights must not write discovery configs."""
    for topic in ("ha2/device/x/config", "homeassistant/status", "agentbox/v1/other/status"):
        assert reply_refusal(topic, "agentbox/v1", ["#"], "ha2") is not None, topic
    assert reply_refusal("replies/me", "agentbox/v1", ["#"], "ha2") is None
