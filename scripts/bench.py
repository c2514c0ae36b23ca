"""Benchmarks of the daemon's foundation; prints one JSON object. Run through ./scripts/bench.

- startup: process spawn to READY=1 on a real NOTIFY_SOCKET (median of several starts)
- idle RSS: the daemon's resident memory once ready, local model not loaded
- submits: 1,000 tasks through the control socket, one connection in sequence and 16 at once,
  against the baseline in the same run: the same 1,000 rows committed one per transaction
  (SQLite WAL, synchronous=FULL), which is what a store without group commit pays.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
N = 1000
# Tasks go to a cloud provider this version has no code for, so each fails at once: the
# benchmark measures intake, not a model.
CONFIG = "[mqtt]\nenabled = false\n[local]\nenabled = false\n[providers.bench]\nkind = 'openai'\n"


def start(state: Path, notify: Path) -> tuple[subprocess.Popen[bytes], float]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(30)
    env = {
        **os.environ,
        "AGENTBOX_STATE_DIR": str(state),
        "AGENTBOX_CONFIG": str(state.parent / "bench.toml"),
        "NOTIFY_SOCKET": str(notify),
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentbox", "run"], env=env, stderr=subprocess.DEVNULL
    )
    while b"READY=1" not in sock.recv(4096):
        pass
    ready = time.perf_counter() - t0
    sock.close()
    notify.unlink()
    return proc, ready


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def submit_all(path: Path, connections: int, prefix: str) -> float:
    async def worker(k: int) -> None:
        reader, writer = await asyncio.open_unix_connection(str(path))
        for i in range(k, N, connections):
            spec = {"id": f"{prefix}-{i}", "prompt": "hello", "tier": "cloud"}
            writer.write(json.dumps({"op": "submit", "spec": spec}).encode() + b"\n")
            await writer.drain()
            reply = json.loads(await reader.readline())
            assert reply["type"] == "reply", reply
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(connections)))
    return time.perf_counter() - t0


def baseline_single_commits(path: Path) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, spec TEXT, state TEXT)")
    spec = json.dumps({"prompt": "hello", "tier": "cloud"})
    t0 = time.perf_counter()
    for i in range(N):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (?, ?, 'queued')", (f"b-{i}", spec))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="abbench-", dir="/tmp"))
    (tmp / "bench.toml").write_text(CONFIG)
    starts = []
    for i in range(5):
        proc, ready = start(tmp / f"s{i}", tmp / "notify.sock")
        starts.append(ready)
        if i < 4:
            proc.terminate()
            proc.wait(30)
    time.sleep(2.0)
    idle_rss = rss_mb(proc.pid)
    sock = tmp / "s4" / "control.sock"
    seq = asyncio.run(submit_all(sock, 1, "seq"))
    conc = asyncio.run(submit_all(sock, 16, "conc"))
    proc.terminate()
    proc.wait(60)
    base = baseline_single_commits(tmp / "baseline.db")
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "startup_to_ready_s": {
            "median": round(statistics.median(starts), 3),
            "runs": [round(s, 3) for s in starts],
            "target": 1.5,
        },
        "idle_rss_mb": {"value": round(idle_rss, 1), "target": 60},
        "submit_1000_via_socket": {
            "sequential_s": round(seq, 3),
            "sequential_per_s": round(N / seq),
            "concurrent16_s": round(conc, 3),
            "concurrent16_per_s": round(N / conc),
        },
        "baseline_sqlite_commit_per_task_full": {"s": round(base, 3), "per_s": round(N / base)},
        "concurrent16_vs_baseline": round(base / conc, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
