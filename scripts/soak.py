"""Soak: tasks at a steady rate over MQTT (real Mosquitto, instant fake provider) for a long
time, sampling the daemon's RSS; prints one JSON object.

The baseline is the daemon's own RSS after the warm-up (caches, pools and allocator arenas
filled): the target (README, Benchmarks) is less than 10 % growth over the hour that follows.
Every task must get exactly one answer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mqtt import ROOT, Client

from tests.mqtt_peer import Broker


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="soak")
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--rate", type=float, default=20.0, help="tasks per second")
    parser.add_argument("--warmup", type=float, default=300.0)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="absoak-", dir="/tmp"))
    broker = Broker(tmp, extra="set_tcp_nodelay true\n").start()
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert fake.stdout is not None
    fake_url = fake.stdout.readline().strip()
    config = tmp / "box.toml"
    config.write_text(
        f"[device]\nid = 'soak'\n[mqtt]\nhost = '127.0.0.1'\nport = {broker.port}\n"
        "health_interval_s = 10\n[local]\nenabled = false\n"
        "[budget]\ndaily_usd = 100000\nmonthly_usd = 1000000\n"
        "[providers.fake]\nkind = 'openai'\nmodel = 'gpt-4o-mini'\n"
        f"base_url = '{fake_url}/v1'\n"
    )
    env = {
        **os.environ,
        "AGENTBOX_STATE_DIR": str(tmp / "state"),
        "AGENTBOX_CONFIG": str(config),
        # as systemd/agentbox.service sets them
        "MALLOC_MMAP_THRESHOLD_": "131072",
        "MALLOC_ARENA_MAX": "2",
    }
    box = subprocess.Popen(
        [sys.executable, "-m", "agentbox", "run"],
        env=env,
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    samples: list[tuple[float, float]] = []
    sent = 0
    try:
        time.sleep(2)
        proc = psutil.Process(box.pid)
        client = Client(broker.port, "agentbox/v1/soak/task/submit")
        start = time.monotonic()
        next_sample = start
        while (now := time.monotonic()) - start < args.seconds:
            due = int((now - start) * args.rate)
            while sent < due:
                client.send(sent, "k")
                sent += 1
            if now >= next_sample:
                samples.append((round(now - start), proc.memory_info().rss / 2**20))
                next_sample += 60
            time.sleep(0.01)
        client.wait({f"k{i}".encode() for i in range(sent)}, timeout=60)
        samples.append((round(time.monotonic() - start), proc.memory_info().rss / 2**20))
        time.sleep(2)  # an answer sent twice would come right after the first
        answered, received = len(client.got), client.received
        client.close()
    finally:
        box.terminate()
        box.wait(30)
        fake.kill()
        broker.stop()
    after_warmup = next(rss for t, rss in samples if t >= min(args.warmup, samples[-1][0]))
    end = samples[-1][1]
    return {
        "seconds": args.seconds,
        "rate_per_s": args.rate,
        "tasks_sent": sent,
        "tasks_answered": answered,
        "answers_received": received,
        "answered_twice": received - answered,
        "rss_mb_start": round(samples[0][1], 1),
        "rss_mb_after_warmup": round(after_warmup, 1),
        "rss_mb_end": round(end, 1),
        "growth_after_warmup_percent": round((end / after_warmup - 1) * 100, 1),
        "target_growth_percent_max": 10,
        "rss_mb_per_minute": [round(rss, 1) for _, rss in samples],
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
