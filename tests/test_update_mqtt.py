"""Updates asked for over MQTT, against a real Mosquitto and real daemons: requests are signed
like task submissions when signatures are required (unsigned and badly signed ones are
rejected and spool nothing), a good one is spooled for the root updater, a duplicate answers
the state of the one in flight, and what the updater writes in update.json comes out as
`update` events, in health and in the retained info."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agentbox import schemas
from agentbox.mqtt.signing import sign
from agentbox.update import record, request
from tests.conftest import ROOT, free_port, wait_for
from tests.mqtt_peer import Broker, Peer
from tests.test_mqtt_hostile import SECRET, box_config, signed, start_box

PREFIX = "agentbox/v1"
UPDATE = f"{PREFIX}/box1/update"
EVENTS = f"{PREFIX}/box1/update/event"
SHA = "ab" * 32
LOCAL = "[local]\nenabled = false\n"


def body(sha: str = SHA, **more: Any) -> bytes:
    data = {"url": "http://127.0.0.1:9/agentbox-0.2.0-amd64.bundle", "sha256": sha}
    return json.dumps({**data, "version": "0.2.0", **more}).encode()


def answers(peer: Peer, n: int, kind: str = "update_request") -> list[dict[str, Any]]:
    def got() -> list[dict[str, Any]]:
        out = [m[1] for m in peer.on(EVENTS) if isinstance(m[1], dict)]
        for event in out:
            schemas.validate("update-event", event)
        out = [b for b in out if b.get("event") == kind]
        return out if len(out) >= n else []

    return wait_for(got, 20, what=f"{n} {kind} event(s)")  # type: ignore[no-any-return]


def box(daemons: Any, broker: Broker, short_tmp: Path, mqtt: str, secret: str | None) -> Any:
    root = short_tmp / "opt"
    root.mkdir(exist_ok=True)
    env = {"AGENTBOX_UPDATE__ROOT": str(root)}
    config = box_config(broker.port, "box1", mqtt + "health_interval_s = 5\n", LOCAL)
    return start_box(daemons, config, "box1", secret, env=env)


def watched_box(
    daemons: Any,
    broker: Broker,
    peers: list[Peer],
    short_tmp: Path,
    mqtt: str,
    secret: str | None,
    *topics: str,
) -> tuple[Any, Path, Peer]:
    """A box, where its update requests are spooled, and a peer on its update events (and
    `topics`)."""
    d = box(daemons, broker, short_tmp, mqtt, secret)
    peer = Peer(broker.port)
    peers.append(peer)
    peer.subscribe(EVENTS, *topics)
    return d, request.spool_path(d.state_dir), peer


def test_signed_requests_are_spooled_unsigned_ones_rejected(
    daemons: Any, broker: Broker, peers: list[Peer], short_tmp: Path
) -> None:
    d, spool, peer = watched_box(
        daemons, broker, peers, short_tmp, "require_signature = true\n", SECRET,
        f"{PREFIX}/box1/health", "ops/#",
    )  # fmt: skip

    peer.publish(UPDATE, body())  # unsigned
    ts = str(time.time())
    forged = [("ts", ts), ("signature", sign("not-the-secret", UPDATE, "box1", ts, body()))]
    peer.publish(UPDATE, body(), user=forged)
    first = answers(peer, 2)
    assert [a["state"] for a in first] == ["rejected", "rejected"], first
    assert "unsigned request" in first[0]["error"]["message"]
    assert "bad signature" in first[1]["error"]["message"]
    assert not spool.exists(), "a request nobody signed was spooled"

    peer.publish(UPDATE, body(), user=signed(UPDATE, "box1", body()))
    ok = answers(peer, 3)[2]
    assert ok["request"] == "requested" and ok["sha256"] == SHA, ok
    spooled = json.loads(spool.read_text())
    assert (spooled["url"], spooled["sha256"], spooled["version"]) == (
        "http://127.0.0.1:9/agentbox-0.2.0-amd64.bundle", SHA, "0.2.0",
    )  # fmt: skip
    assert spooled["at"] == ok["requested_at"]
    assert spool.stat().st_mode & 0o777 == 0o600

    # The same update asked again (signed anew) answers the one in flight, spools nothing new;
    # another one is refused while it runs. Answers go to a Response Topic when there is one.
    time.sleep(0.01)
    again = body()
    peer.publish(UPDATE, again, user=signed(UPDATE, "box1", again), response_topic="ops/a")
    other = body("cd" * 32)
    peer.publish(UPDATE, other, user=signed(UPDATE, "box1", other), response_topic="ops/b")
    dup = wait_for(lambda: peer.on("ops/a"), 20, what="answer to the duplicate")[0][1]
    assert dup["request"] == "in_flight" and dup["requested_at"] == ok["requested_at"], dup
    busy = wait_for(lambda: peer.on("ops/b"), 20, what="answer to the other")[0][1]
    assert busy["state"] == "rejected" and "another update is under way" in str(busy["error"])
    assert json.loads(spool.read_text()) == spooled

    # The root updater takes the request and writes its progress; the daemon reports it.
    root = Path(d.env["AGENTBOX_UPDATE__ROOT"])
    req = request.take(spool)
    at: dict[str, Any] = {"sha256": req.sha256, "requested_at": req.at}
    for state in ("downloading", "verifying", "installing", "probation"):
        record.write(root, state, "0.1.0", "0.2.0", **at)
        wait_for(lambda s=state: [e for e in answers(peer, 1, "update") if e["state"] == s], 20)
    record.write(root, "succeeded", "0.1.0", "0.2.0", **at)
    event = wait_for(
        lambda: [e for e in answers(peer, 1, "update") if e["state"] == "succeeded"], 20
    )[0]
    assert (event["from"], event["to"], event["requested_at"]) == ("0.1.0", "0.2.0", req.at)

    def health_says_succeeded() -> bool:
        reports = [m[1] for m in peer.on(f"{PREFIX}/box1/health")]
        return any((r.get("update") or {}).get("state") == "succeeded" for r in reports)

    wait_for(health_says_succeeded, 20, what="health carrying the update's state")
    for report in peer.on(f"{PREFIX}/box1/health"):
        schemas.validate("health", report[1])
    info = Peer(broker.port)
    peers.append(info)
    info.subscribe(f"{PREFIX}/box1/info")
    retained = wait_for(lambda: info.on(f"{PREFIX}/box1/info"), 10)[-1][1]
    assert retained["update"]["state"] == "succeeded" and retained["update"]["to"] == "0.2.0"
    assert "sha256" not in retained["update"]
    schemas.validate("info", retained)


def test_a_pool_request_reaches_the_updater_and_its_refusal_is_reported(
    daemons: Any, broker: Broker, peers: list[Peer], short_tmp: Path
) -> None:
    d, spool, peer = watched_box(daemons, broker, peers, short_tmp, "pool = 'p1'\n", None)
    pool = f"{PREFIX}/pool/p1/update"
    peer.publish(pool, json.dumps({"url": "file:///etc/shadow", "sha256": SHA}))
    peer.publish(pool, json.dumps({"url": "http://x/b", "sha256": SHA, "at": 1}))
    url = f"http://127.0.0.1:{free_port()}/agentbox-0.2.0.bundle"
    peer.publish(pool, json.dumps({"url": url, "sha256": SHA}))
    got = answers(peer, 3)
    assert got[0]["state"] == "rejected" and "http:// or https://" in got[0]["error"]["message"]
    assert got[1]["state"] == "rejected" and "'at'" in got[1]["error"]["message"]
    assert got[2]["request"] == "requested", got
    assert spool.exists()

    # What agentbox-update.service runs (as root on a box): here the download finds nothing.
    keys = short_tmp / "release-keys"
    keys.mkdir()
    env = dict(d.env) | {"AGENTBOX_UPDATE__KEYS_DIR": str(keys)}
    proc = subprocess.run(
        [sys.executable, "-m", "agentbox", "update", "--request", str(spool), "--json"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 65, proc.stderr
    assert json.loads(proc.stdout)["state"] == "refused"
    assert not spool.exists(), "the request was left for the path unit to start again"
    failed = wait_for(
        lambda: [e for e in answers(peer, 1, "update") if e["state"] == "failed"], 20
    )[0]
    assert "unreachable" in failed["error"] and failed["requested_at"] == got[2]["requested_at"]
    # Nothing is in flight any more: the next request is taken.
    peer.publish(pool, json.dumps({"url": url, "sha256": SHA}))
    assert answers(peer, 4)[3]["request"] == "requested"
    assert spool.exists()


def test_allow_downgrade_is_part_of_the_signed_request(
    daemons: Any, broker: Broker, peers: list[Peer], short_tmp: Path
) -> None:
    _, spool, peer = watched_box(
        daemons, broker, peers, short_tmp, "require_signature = true\n", SECRET
    )
    # Signed without the flag, sent with it: the HMAC covers the payload, so it is forged.
    peer.publish(UPDATE, body(allow_downgrade=True), user=signed(UPDATE, "box1", body()))
    odd = body(allow_downgrade="yes")
    peer.publish(UPDATE, odd, user=signed(UPDATE, "box1", odd))
    got = answers(peer, 2)
    assert [a["state"] for a in got] == ["rejected", "rejected"], got
    assert "bad signature" in got[0]["error"]["message"]
    assert "'allow_downgrade' must be true or false" in got[1]["error"]["message"]
    assert not spool.exists()
    asked = body(allow_downgrade=True)
    peer.publish(UPDATE, asked, user=signed(UPDATE, "box1", asked))
    assert answers(peer, 3)[2]["request"] == "requested"
    assert json.loads(spool.read_text())["allow_downgrade"] is True
    assert request.take(spool).allow_downgrade is True
