"""Updates over MQTT once on a booted image (scripts/image-test --update), under its systemd.

In the guest, as an operator on the box's own network would: the bundles served by a loopback
HTTP server, the request published by `agentbox fleet update --box <id> --url ...` to the
image's own Mosquitto, the daemon (unprivileged) spooling it, agentbox-update.path starting
agentbox-update.service (root), and every message on `<prefix>/<id>/update/event` recorded by
a small subscriber (scripts/guest_mqtt_tap.py). A bad bundle first (rolled back by itself),
then a good one; tasks submitted before and during each update must each finish once.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path
from typing import Any

import build_image
from box_test import Report, sh, tail
from image_update import Guest, _json, serving, submit_tasks

REPO = build_image.REPO
DIR = "/root/mqtt"
HTTP_PORT = 8089
BROKER = ("127.0.0.1", 1883)  # the image's Mosquitto, the daemon's default [mqtt]
PREFIX = "agentbox/v1"
PROBATION_S = 20
UPDATE_LIMIT = 2400  # download + 43 wheels under TCG + probation, with the model busy
EVENTS = f"{DIR}/events.jsonl"
GOOD_STATES = ("downloading", "verifying", "installing", "probation", "succeeded")
# The updater's own settings come from its unit: a drop-in (gone at the next boot) shortens
# probation as `agentbox update`'s environment does for the file updates.
DROP_IN = "/run/systemd/system/agentbox-update.service.d/image-test.conf"
MAX_UPDATE_EXPOSURE = 3.0


def _unit(g: Guest, unit: str, cmd: str) -> tuple[int, str]:
    """cmd as a transient service of the guest's systemd (it outlives the SSH command)."""
    return sh(g, f"systemd-run --quiet --collect --unit={unit} {cmd}")


def setup(g: Guest, rep: Report, arch: str, bundles: dict[str, dict[str, Any]]) -> str:
    """Bundles served, the subscriber running, probation shortened; the guest's device id."""
    sh(g, f"mkdir -p {DIR}")
    for kind in ("good2", "bad2"):
        g.copy_in(Path(bundles[kind]["bundle"]), f"{DIR}/{kind}.bundle")
    g.copy_in(REPO / "scripts/guest_mqtt_tap.py", f"{DIR}/tap.py")
    _, st = sh(g, "agentbox status --json")
    status = _json(st) if st else None
    status = status if isinstance(status, dict) else {}
    dev = str(status.get("device_id", ""))
    mqtt = status.get("mqtt") or {}
    _, broker = sh(g, "systemctl is-active mosquitto")
    rep.check(
        f"{arch} mqtt update: the image's daemon is connected to its own Mosquitto",
        bool(dev) and broker == "active" and mqtt.get("connected") is True
        and str(mqtt.get("broker", "")).endswith(f":{BROKER[1]}"),
        f"device {dev or '?'}, mosquitto {broker}, mqtt {mqtt}",
    )  # fmt: skip
    _, owner = sh(g, "ps -o user= -p $(systemctl show -p MainPID --value agentbox)")
    rep.check(f"{arch} mqtt update: the daemon runs unprivileged", owner == "agentbox", owner)
    _unit(g, "image-test-http", f"--working-directory={DIR} /usr/bin/python3 -m http.server "
                                f"--bind 127.0.0.1 {HTTP_PORT}")  # fmt: skip
    topic = shlex.quote(f"{PREFIX}/{dev}/update/event")
    _unit(g, "image-test-tap", f"/usr/bin/python3 {DIR}/tap.py {BROKER[0]} {BROKER[1]} {EVENTS} "
                               f"{topic}")  # fmt: skip
    env = f"[Service]\nEnvironment=AGENTBOX_UPDATE__PROBATION_S={PROBATION_S}\n"
    sh(g, f"mkdir -p {Path(DROP_IN).parent} && printf %s {shlex.quote(env)} > {DROP_IN}"
          " && systemctl daemon-reload")  # fmt: skip
    probe = f"import urllib.request as u; u.urlopen('http://127.0.0.1:{HTTP_PORT}/')"
    rc, _ = sh(g, f'for i in $(seq 30); do python3 -c "{probe}" 2>/dev/null && exit 0; sleep 1;'
                  " done; exit 1")  # fmt: skip
    rep.check(f"{arch} mqtt update: the bundles are served on 127.0.0.1:{HTTP_PORT} in the guest",
              rc == 0)  # fmt: skip
    return dev


def _events(g: Guest) -> list[dict[str, Any]]:
    _, out = sh(g, f"cat {EVENTS} 2>/dev/null")
    got = []
    for line in out.splitlines():
        try:
            body = json.loads(json.loads(line)["payload"])
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(body, dict):
            got.append(body)
    return got


def _ours(events: list[dict[str, Any]], since: int) -> tuple[Any, list[str]]:
    """(the box's requested_at for the request made after `since` events, the update states
    published for it, in order)."""
    token = next((e.get("requested_at") for e in events[since:]
                  if e.get("event") == "update_request" and e.get("request") == "requested"),
                 None)  # fmt: skip
    states = [str(e.get("state")) for e in events[since:]
              if e.get("event") == "update" and token is not None
              and e.get("requested_at") == token]  # fmt: skip
    return token, states


def _in_order(states: list[str], want: tuple[str, ...]) -> bool:
    it = iter(states)
    return all(any(s == w for s in it) for w in want)


def _submit_during(g: Guest, n: int) -> list[str]:
    """n tasks submitted while the update runs; a submission refused while the daemon
    restarts is tried again, as an owner would."""
    ids: list[str] = []
    for k in range(n):
        for _ in range(40):
            rc, out = sh(g, f"agentbox submit --json --tier local --max-tokens 2 'During {k}.'")
            got = _json(out)
            if rc == 0 and isinstance(got, dict) and got.get("id"):
                ids.append(str(got["id"]))
                break
            time.sleep(3)
    return ids


def one_update(g: Guest, dev: str, kind: str) -> dict[str, Any]:
    """`agentbox fleet update --box dev --url ...` for one bundle, run in the guest; what was
    seen while it ran: tasks submitted during it, the updater's process, its exit and JSON."""
    base = f"{DIR}/{kind}"
    url = f"http://127.0.0.1:{HTTP_PORT}/{kind}.bundle"
    fleet = (f"/usr/local/bin/agentbox fleet update --box {dev} --url {url} --timeout 1800 "
             f"--json {base}.bundle > {base}.json 2> {base}.log; echo $? > {base}.rc")  # fmt: skip
    since = len(_events(g))
    t0 = time.monotonic()
    _unit(g, f"image-test-fleet-{kind}", f"/bin/sh -c {shlex.quote(fleet)}")
    seen: dict[str, Any] = {"during": [], "updater": "", "states": []}
    while time.monotonic() - t0 < UPDATE_LIMIT:
        rc, _ = sh(g, f"test -s {base}.rc")
        if rc == 0:
            break
        _, ps = sh(g, "ps -eo user=,unit=,args= | grep '[a]gentbox update --request' | head -n1")
        if ps and not seen["updater"]:
            seen["updater"] = " ".join(ps.split()[:2])
        _, rec = sh(g, "cat /opt/agentbox/update.json 2>/dev/null")
        state = (_json(rec) or {}).get("state") if rec else None
        if state and (not seen["states"] or seen["states"][-1] != state):
            seen["states"].append(state)
        if state in ("installing", "probation") and not seen["during"]:
            seen["during"] = _submit_during(g, 2)
        time.sleep(5)
    seen["secs"] = round(time.monotonic() - t0, 1)
    _, rc_text = sh(g, f"cat {base}.rc")
    seen["rc"] = int(rc_text) if rc_text.isdigit() else None
    _, out = sh(g, f"cat {base}.json")
    seen["summary"] = _json(out)
    _, log = sh(g, f"cat {base}.log")
    seen["log"] = log
    seen["token"], seen["events"] = _ours(_events(g), since)
    _, journal = sh(g, "journalctl -o cat -u agentbox-update.service -u agentbox-update.path "
                       "--since '-45min' | tail -n 12")  # fmt: skip
    seen["journal"] = journal
    return seen


def _retained_info(g: Guest, dev: str) -> dict[str, Any]:
    out = f"{DIR}/info.jsonl"
    topic = shlex.quote(f"{PREFIX}/{dev}/info")
    sh(g, f"rm -f {out}; timeout 30 /usr/bin/python3 {DIR}/tap.py {BROKER[0]} {BROKER[1]} {out} "
          f"--once {topic}")  # fmt: skip
    _, text = sh(g, f"cat {out}")
    try:
        body = json.loads(json.loads(text.splitlines()[0])["payload"])
    except (ValueError, KeyError, IndexError, TypeError):
        return {"unreadable": tail(text)}
    return body if isinstance(body, dict) else {}


def _status(g: Guest) -> dict[str, Any]:
    _, st = sh(g, "agentbox status --json")
    got = _json(st)
    return got if isinstance(got, dict) else {}


def check_mqtt_update(
    g: Guest, rep: Report, arch: str, bundles: dict[str, dict[str, Any]]
) -> list[str]:
    """The bad then the good bundle over MQTT; the ids of the tasks submitted for it."""
    dev = setup(g, rep, arch, bundles)
    old, _ = serving(g)
    new = str(bundles["good2"]["version"])
    ids = submit_tasks(g, rep, arch, "mqtt update")

    bad = one_update(g, dev, "bad2")
    rep.figures[f"{arch}_mqtt_rollback_s"] = bad["secs"]
    rep.figures[f"{arch}_mqtt_bad_events"] = bad["events"]
    ids += bad["during"]
    summary = bad["summary"] if isinstance(bad["summary"], dict) else {}
    boxes = summary.get("boxes") or [{}]
    rep.check(
        f"{arch} mqtt update: fleet update of a release that exits 78 fails (exit 1), the box"
        " rolled back",
        bad["rc"] == 1 and summary.get("failed") == [dev]
        and str(boxes[0].get("error", "")).startswith("rolled_back"),
        f"exit {bad['rc']}, {summary or tail(bad['log'])}",
    )  # fmt: skip
    rep.check(f"{arch} mqtt update: `rolled_back` published on {PREFIX}/<id>/update/event",
              "rolled_back" in bad["events"], f"events {bad['events']}")  # fmt: skip
    version, active = serving(g)
    rep.check(f"{arch} mqtt update: after the rollback {old} serves again, READY",
              version == old and active == "active", f"version {version}, {active}")  # fmt: skip

    good = one_update(g, dev, "good2")
    rep.figures[f"{arch}_mqtt_update_s"] = good["secs"]
    rep.figures[f"{arch}_mqtt_good_events"] = good["events"]
    rep.figures[f"{arch}_mqtt_updater_process"] = good["updater"] or bad["updater"]
    ids += good["during"]
    summary = good["summary"] if isinstance(good["summary"], dict) else {}
    rep.check(f"{arch} mqtt update: fleet update of the good release succeeds (exit 0)",
              good["rc"] == 0 and summary.get("ok") is True,
              f"exit {good['rc']}, {summary or tail(good['log'])}")  # fmt: skip
    for seen, kind in ((bad, "bad"), (good, "good")):
        rep.check(
            f"{arch} mqtt update ({kind}): agentbox-update.path started agentbox-update.service"
            " as root",
            re.fullmatch(r"root agentbox-update\.service", seen["updater"]) is not None,
            f"updater process: {seen['updater'] or 'not seen'}; journal: {tail(seen['journal'])}",
        )  # fmt: skip
    rep.check(
        f"{arch} mqtt update: events {' .. '.join(GOOD_STATES)} arrived on the event topic",
        _in_order(good["events"], GOOD_STATES), f"events {good['events']}",
    )  # fmt: skip
    st = _status(g)
    want = {"state": "succeeded", "from": old, "to": new}
    upd = {k: (st.get("update") or {}).get(k) for k in want}
    rep.check(f"{arch} mqtt update: status shows {new} and update {want}",
              st.get("version") == new and upd == want,
              f"version {st.get('version')}, {upd}")  # fmt: skip
    info = _retained_info(g, dev)
    iupd = {k: (info.get("update") or {}).get(k) for k in want}
    rep.check(f"{arch} mqtt update: the retained info shows {new} and update {want}",
              info.get("version") == new and iupd == want,
              f"version {info.get('version')}, {iupd}")  # fmt: skip
    rep.check(f"{arch} mqtt update: tasks were submitted during both updates",
              bool(bad["during"]) and bool(good["during"]),
              f"bad: {bad['during']}, good: {good['during']}")  # fmt: skip
    for unit in ("image-test-tap", "image-test-http"):
        sh(g, f"systemctl stop {unit}")
    sh(g, f"rm -f {DROP_IN} {DIR}/*.bundle && systemctl daemon-reload")
    return ids


def check_update_security(g: Guest, rep: Report, arch: str) -> None:
    """systemd-analyze security of the updater's unit, the daemon's beside it for comparison."""
    for unit in ("agentbox-update.service", "agentbox.service"):
        _, out = sh(g, f"systemd-analyze security --no-pager {unit} | tail -n1")
        m = re.search(r"exposure level for \S+: (\d+(?:\.\d+)?)", out)
        rep.figures[f"{arch}_exposure_{unit}"] = float(m.group(1)) if m else out
    level = rep.figures[f"{arch}_exposure_agentbox-update.service"]
    rep.check(f"{arch} agentbox-update.service exposure <= {MAX_UPDATE_EXPOSURE}",
              isinstance(level, float) and level <= MAX_UPDATE_EXPOSURE, str(level))  # fmt: skip
