"""A fake fleet on a broker: many boxes' retained status and info, and health every interval.

Each box reports on its own phase, so the broker sees a steady rate (5,000 boxes every 10 s is
500 reports a second). Some boxes die during the run (half by their will, half by going
silent, as a hung daemon would), some are over budget, a few run another version. The health
`ts` is the moment of sending, which is what `scripts/bench-fleet` measures the view's lag from.

    scripts/fleet-sim --port 1883 --boxes 1000 --interval 10 --duration 600
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


@dataclass
class SimBox:
    device_id: str
    phase: float
    version: str
    over_budget: bool
    dies_at: float | None  # seconds into the run
    by_will: bool
    dead: bool = False
    sent: int = 0


def make_boxes(
    n: int, dying: float, over_budget: float, duration: float, seed: int
) -> list[SimBox]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        dies = rng.random() < dying
        out.append(
            SimBox(
                device_id=f"sim{i:05d}",
                phase=rng.random(),
                version="1.0.0" if rng.random() > 0.03 else "0.9.0",
                over_budget=rng.random() < over_budget,
                dies_at=rng.uniform(0.2, 0.8) * duration if dies else None,
                by_will=rng.random() < 0.5,
            )
        )
    return out


def health(box: SimBox, interval: float, rng: random.Random) -> dict[str, object]:
    """About the size and shape of a real box's report."""
    cap = 2.0
    today = cap * (1.05 if box.over_budget else rng.uniform(0, 0.5))
    return {
        "ts": round(time.time(), 3),
        "uptime_s": int(3600 + box.sent * interval),
        "version": box.version,
        "cpu_percent": round(rng.uniform(1, 60), 1),
        "load_1m": round(rng.uniform(0, 2), 2),
        "mem_percent": round(rng.uniform(20, 70), 1),
        "mem_available_mb": rng.randint(500, 3000),
        "disk_free_mb": rng.randint(2000, 60000),
        "temp_c": round(rng.uniform(35, 70), 1),
        "queue": {
            "interactive": {"queued": rng.randint(0, 3), "running": rng.randint(0, 1)},
            "background": {"queued": rng.randint(0, 9), "running": 0},
            "total": {"queued": rng.randint(0, 12), "running": rng.randint(0, 1)},
        },
        "tasks": {"succeeded_1h": rng.randint(0, 200), "failed_1h": rng.randint(0, 2)},
        "spend": {
            "today_usd": round(today, 4),
            "month_usd": round(today * 10, 4),
            "daily_cap_usd": cap,
            "monthly_cap_usd": 30.0,
        },
        "providers": {
            "openai": {"state": "ok", "retry_in_s": 0},
            "anthropic": {"state": "ok", "retry_in_s": 0},
        },
        "local": {
            "loaded": True,
            "model": "SmolLM2-135M",
            "tokens_per_s": 41.2,
            "load_error": None,
        },
        "mqtt_session": 3,
        "health_interval_s": max(1, round(interval)),
    }


def publish(client: mqtt.Client, topic: str, body: Mapping[str, object], retain: bool) -> None:
    client.publish(topic, json.dumps(body), qos=1 if retain else 0, retain=retain)


def run(args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(args.seed)
    boxes = make_boxes(args.boxes, args.dying, args.over_budget, args.duration, args.seed)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fleet-sim-{args.seed}")
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(1000)
    client.connect(args.host, args.port)
    client.loop_start()
    p = args.prefix
    for box in boxes:
        status = {"state": "online", "session": 3, "ts": time.time()}
        publish(client, f"{p}/{box.device_id}/status", status, retain=True)
        info = {"version": box.version, "name": f"shop-{box.device_id[3:]}", "hardware": "sim"}
        publish(client, f"{p}/{box.device_id}/info", info, retain=True)
    start = time.monotonic()
    due = sorted((b.phase * args.interval, i) for i, b in enumerate(boxes))  # a heap
    died = 0
    while time.monotonic() - start < args.duration and due:
        at, i = due[0]
        wait = at - (time.monotonic() - start)
        if wait > 0:
            time.sleep(min(wait, 0.5))
            continue
        heapq.heappop(due)
        box = boxes[i]
        if box.dies_at is not None and at >= box.dies_at:
            died += 1
            box.dead = True
            if box.by_will:  # the broker would publish this when the connection broke
                gone = {"state": "offline", "session": 3, "ts": time.time()}
                publish(client, f"{p}/{box.device_id}/status", gone, retain=True)
            continue
        publish(client, f"{p}/{box.device_id}/health", health(box, args.interval, rng), False)
        box.sent += 1
        heapq.heappush(due, (at + args.interval, i))
    client.loop_stop()
    client.disconnect()
    return {"boxes": len(boxes), "health_sent": sum(b.sent for b in boxes), "died": died}


def main() -> int:
    a = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=1883)
    a.add_argument("--prefix", default="agentbox/v1")
    a.add_argument("--boxes", type=int, default=100)
    a.add_argument("--interval", type=float, default=10.0, help="seconds between health reports")
    a.add_argument("--duration", type=float, default=60.0, help="seconds to run")
    a.add_argument("--dying", type=float, default=0.02, help="share of boxes that die")
    a.add_argument("--over-budget", type=float, default=0.05, help="share over their cap")
    a.add_argument("--seed", type=int, default=1)
    args = a.parse_args()
    if args.boxes < 1 or args.interval <= 0 or args.duration <= 0:
        a.error("--boxes, --interval and --duration must be positive")
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
