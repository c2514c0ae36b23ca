"""Fleet monitor benchmark; prints one JSON object. Run through ./scripts/bench-fleet.

For each fleet size (100, 1,000 and 5,000 boxes, health every 10 s, from scripts/fleet_sim.py on
a local Mosquitto) one monitor runs alone against the simulator, after a warm-up that takes in
the retained status and info of every box:

- view: `agentbox fleet`'s live view (the Textual app, headless at 80x25, its real MQTT feed);
- baseline bare_subscriber: the same subscription on aiomqtt that only decodes each message's
  JSON: the floor any monitor in Python pays; the view's CPU is reported against it;
- baseline full_redraw: the same view placing every box again on every tick (its row worked
  out, its place in the order), which is what a monitor without incremental updates does.

Figures: CPU (percent of one core, over the measured window), RSS at the end, and the lag from
a report's `ts` (when the simulator sent it) to the tick that put it in the table (for the
bare subscriber: to its arrival, the broker's share of any lag).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.mqtt_peer import Broker  # noqa: E402  (the tests' Mosquitto runner)

SIZES = (100, 1000, 5000)
PROBES = ("view", "bare_subscriber", "full_redraw")
PREFIX = "agentbox/v1"


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_s": None, "p95_s": None, "max_s": None}
    ordered = sorted(values)
    return {
        "p50_s": round(statistics.median(ordered), 3),
        "p95_s": round(ordered[int(len(ordered) * 0.95)], 3),
        "max_s": round(ordered[-1], 3),
    }


# ---- the probes, each in its own process -------------------------------------------------


def _loaded(port: int) -> Any:
    from agentbox.config import Loaded  # noqa: PLC0415
    from agentbox.settings import MqttConfig, Settings  # noqa: PLC0415

    settings = Settings(mqtt=MqttConfig(host="127.0.0.1", port=port))
    return Loaded(settings=settings, path=None, state_dir=Path("/nonexistent"), device_id="bench")


def probe_view(port: int, warmup: float, seconds: float, out: Path, full: bool) -> None:
    from agentbox.fleet import monitor  # noqa: PLC0415
    from agentbox.fleet.view import FleetView  # noqa: PLC0415

    class Probe(FleetView):
        ticks: list[float]

        def tick(self) -> None:
            t0 = time.perf_counter()
            if full:  # every box placed again, every tick
                with self.fleet.lock:
                    self.fleet.dirty |= set(self.fleet.boxes)
                    self.keys.clear()
            super().tick()
            self.ticks.append(time.perf_counter() - t0)

        def on_mount(self) -> None:  # after FleetView's own (Textual calls both)
            self.ticks = []
            self.set_timer(warmup, self.measure)
            self.set_timer(warmup + seconds, self.done)

        def measure(self) -> None:
            self.lags.clear()
            self.ticks.clear()
            self.start_messages = self.fleet.messages

        def done(self) -> None:
            figures = {
                "messages": self.fleet.messages - self.start_messages,
                "boxes": len(self.fleet.boxes),
                "rows": len(self.keys),
                "lag": spread(list(self.lags)),
                "tick_p95_ms": round(sorted(self.ticks)[int(len(self.ticks) * 0.95)] * 1000, 1)
                if self.ticks
                else None,
            }
            out.write_text(json.dumps(figures))
            self.exit()

    loaded = _loaded(port)
    fleet = monitor.new_fleet(loaded)
    Probe(fleet, monitor.Feeder(loaded, fleet)).run(headless=True, size=(80, 25))


async def probe_bare(port: int, warmup: float, seconds: float) -> dict[str, Any]:
    import aiomqtt  # noqa: PLC0415

    lags: list[float] = []
    count = 0
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-bare-{os.getpid()}") as client:
        for kind in ("status", "info", "health"):
            await client.subscribe(f"{PREFIX}/+/{kind}", qos=1)
        start = time.monotonic()
        async for message in client.messages:
            body = json.loads(message.payload if isinstance(message.payload, bytes) else b"{}")
            elapsed = time.monotonic() - start
            if elapsed > warmup + seconds:
                break
            if elapsed > warmup:
                count += 1
                if str(message.topic).endswith("/health"):
                    lags.append(time.time() - body["ts"])
    return {"messages": count, "lag": spread(lags)}


# ---- the harness --------------------------------------------------------------------------


def one(probe: str, boxes: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    broker = Broker(tmp).start()
    out = tmp / f"{probe}-{boxes}.json"
    seconds = args.warmup + args.measure
    py = sys.executable
    me = str(Path(__file__).resolve())
    common = ["--port", str(broker.port), "--warmup", str(args.warmup), "--out", str(out)]
    monitor = subprocess.Popen([py, me, "--probe", probe, "--measure", str(args.measure), *common])
    try:
        time.sleep(2.0)  # subscribed before the simulator's first message
        sim = subprocess.Popen(
            [
                py,
                str(ROOT / "scripts" / "fleet_sim.py"),
                "--port",
                str(broker.port),
                "--boxes",
                str(boxes),
                "--interval",
                str(args.interval),
                "--duration",
                str(seconds + 10),
            ],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(args.warmup)
        c0, t0 = cpu_s(monitor.pid), time.monotonic()
        time.sleep(args.measure - 1)
        c1, t1 = cpu_s(monitor.pid), time.monotonic()
        rss = rss_mb(monitor.pid)
        monitor.wait(args.measure + 60)
        sim.terminate()
        sim.wait(30)
    finally:
        if monitor.poll() is None:
            monitor.kill()
        broker.stop()
    figures: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"error": "none"}
    return {"cpu_percent": round((c1 - c0) / (t1 - t0) * 100, 1), "rss_mb": rss, **figures}


def main() -> int:
    a = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    a.add_argument("--sizes", default=",".join(map(str, SIZES)))
    a.add_argument("--interval", type=float, default=10.0)
    a.add_argument("--warmup", type=float, default=15.0)
    a.add_argument("--measure", type=float, default=30.0)
    a.add_argument("--probe", choices=PROBES, help=argparse.SUPPRESS)
    a.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = a.parse_args()
    if args.probe == "bare_subscriber":
        figures = asyncio.run(probe_bare(args.port, args.warmup, args.measure))
        args.out.write_text(json.dumps(figures))
        return 0
    if args.probe:
        probe_view(args.port, args.warmup, args.measure, args.out, args.probe == "full_redraw")
        return 0
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "interval_s": args.interval,
        "measured_s": args.measure,
        "sizes": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        for boxes in (int(s) for s in args.sizes.split(",")):
            runs = {p: one(p, boxes, args, Path(tmp)) for p in PROBES}
            base = runs["bare_subscriber"]["cpu_percent"]
            runs["view_cpu_vs_bare_subscriber"] = round(runs["view"]["cpu_percent"] / base, 2)
            runs["full_redraw_cpu_vs_view"] = round(
                runs["full_redraw"]["cpu_percent"] / max(runs["view"]["cpu_percent"], 0.1), 2
            )
            result["sizes"][str(boxes)] = runs
            print(f"bench-fleet: {boxes} boxes done", file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
