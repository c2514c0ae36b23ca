"""Benchmarks of the daemon's foundation; prints one JSON object. Run through ./scripts/bench.

- startup: process spawn to READY=1 on a real NOTIFY_SOCKET (median of several starts)
- idle RSS: the daemon's resident memory once ready, local model not loaded
- submits: 1,000 tasks through the control socket, one connection in sequence and 16 at once,
  against the baseline in the same run: the same 1,000 rows committed one per transaction
  (SQLite WAL, synchronous=FULL), which is what a store without group commit pays.
- latency: one task at a time through the daemon to an instant fake provider, against the
  same chat completion sent straight to that fake by a lean raw-socket client (the baseline;
  an httpx client too): the difference is ours.
- spread-out latency: one task every 60 ms for a minute (p50/p99), against one bare durable
  SQLite commit every 60 ms (the store's floor on this disk).
- local tokens/s: our worker against bare llama-cpp-python, same model, threads and prompt.
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

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_mqtt  # scripts/bench_mqtt.py: MQTT against Huey + httpx + paho

ROOT = Path(__file__).resolve().parent.parent

N = 1000


def bench_config(fake_url: str) -> str:
    """Cloud tasks go to an instant fake provider on loopback: this measures the daemon."""
    return (
        "[mqtt]\nenabled = false\n[local]\nenabled = false\n[budget]\ndaily_usd = 1000\n"
        "monthly_usd = 10000\n"
        f"[providers.bench]\nkind = 'openai'\nmodel = 'gpt-4o-mini'\nbase_url = '{fake_url}/v1'\n"
    )


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


LATENCY_N = 300
CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hello"}],
    "max_tokens": 16,
    "stream": True,
    "stream_options": {"include_usage": True},
}


def percentiles(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "p50_ms": round(xs[len(xs) // 2] * 1000, 2),
        "p99_ms": round(xs[int(len(xs) * 0.99) - 1] * 1000, 2),
    }


def raw_request(url: str) -> bytes:
    """The chat completion as HTTP/1.1 bytes, keep-alive: what the lean floor client sends."""
    host = url.removeprefix("http://")
    body = json.dumps(CHAT).encode()
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


def raw_latency(url: str) -> list[float]:
    """The floor: a lean client on a raw keep-alive socket that reads the chunked stream to
    its end. httpx's own ~1 ms per call would hide part of what agentbox adds."""
    host, port = url.removeprefix("http://").split(":")
    request = raw_request(url)
    out = []
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")
        for _ in range(LATENCY_N):
            t0 = time.perf_counter()
            sock.sendall(request)
            while reader.readline() != b"\r\n":  # status line and headers
                pass
            while size := int(reader.readline(), 16):  # chunks, up to the last (size 0)
                reader.read(size + 2)
            reader.readline()
            out.append(time.perf_counter() - t0)
    return out


def direct_latency(url: str) -> list[float]:
    """A client calling the (fake) provider itself with httpx: the floor as most clients see it."""
    out = []
    with httpx.Client() as client:
        for _ in range(LATENCY_N):
            t0 = time.perf_counter()
            with client.stream("POST", f"{url}/v1/chat/completions", json=CHAT) as resp:
                for _ in resp.iter_lines():
                    pass
            out.append(time.perf_counter() - t0)
    return out


async def daemon_latency(path: Path) -> list[float]:
    """The same call as a task: submit over the socket and wait for the result."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 22)
    out = []
    for i in range(LATENCY_N):
        spec = {"id": f"lat-{i}", "prompt": "hello", "tier": "cloud", "max_tokens": 16}
        t0 = time.perf_counter()
        writer.write(json.dumps({"op": "submit", "spec": spec, "wait": True}).encode() + b"\n")
        await writer.drain()
        while True:
            msg = json.loads(await reader.readline())
            if msg["type"] != "event":
                break
        assert msg["type"] == "reply" and msg["task"]["state"] == "succeeded", msg
        out.append(time.perf_counter() - t0)
    writer.close()
    return out


SPREAD_GAP_S = 0.06
SPREAD_N = 1000  # one minute


async def spread_latency(path: Path) -> list[float]:
    """One task every 60 ms for a minute, each timed from its submit to its result: unlike
    tasks sent back to back, these meet the disk's periodic fsync stalls."""
    conns = [await asyncio.open_unix_connection(str(path), limit=1 << 22) for _ in range(16)]
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for c in conns:
        idle.put_nowait(c)
    out: list[float] = []

    async def one(i: int) -> None:
        reader, writer = await idle.get()
        spec = {"id": f"spread-{i}", "prompt": "hello", "tier": "cloud", "max_tokens": 16}
        t0 = time.perf_counter()
        writer.write(json.dumps({"op": "submit", "spec": spec, "wait": True}).encode() + b"\n")
        await writer.drain()
        while (msg := json.loads(await reader.readline()))["type"] == "event":
            pass
        out.append(time.perf_counter() - t0)
        assert msg["task"]["state"] == "succeeded", msg
        idle.put_nowait((reader, writer))

    start = time.perf_counter()
    running = []
    for i in range(SPREAD_N):
        await asyncio.sleep(max(0.0, start + i * SPREAD_GAP_S - time.perf_counter()))
        running.append(asyncio.create_task(one(i)))
    await asyncio.gather(*running)
    for _, writer in conns:
        writer.close()
    return out


def baseline_spread_commits(path: Path) -> list[float]:
    """The store's floor for the spread-out run: one bare synchronous=FULL commit (WAL) every
    60 ms for a minute, the rows a task's accept, claim and result write."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    out = []
    start = time.perf_counter()
    for i in range(SPREAD_N):
        time.sleep(max(0.0, start + i * SPREAD_GAP_S - time.perf_counter()))
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        for _ in range(3):
            conn.execute("INSERT INTO t (body) VALUES (?)", ("x" * 600,))
        conn.execute("COMMIT")
        out.append(time.perf_counter() - t0)
    conn.close()
    return out


def local_tokens_per_s() -> dict[str, Any]:
    """Generation speed of our worker against bare llama-cpp-python: same model, threads,
    prompt, max_tokens and temperature; 5 runs each, alternating (so a slow spell of the
    machine hits both), medians compared."""
    from llama_cpp import Llama  # noqa: PLC0415

    from agentbox.providers.base import Request  # noqa: PLC0415
    from agentbox.providers.local import LocalProvider, bundled_model, performance_cores  # noqa: PLC0415

    threads = performance_cores()
    messages: Any = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]
    llm = Llama(
        str(bundled_model()), n_threads=threads, n_threads_batch=threads, n_ctx=4096, verbose=False
    )

    def bare_once() -> float:
        first, n = 0.0, 0
        for chunk in llm.create_chat_completion(
            messages=messages, max_tokens=128, temperature=0.2, stream=True
        ):
            delta: Any = chunk["choices"][0]["delta"]  # type: ignore[index]
            if delta.get("content"):
                first = first or time.perf_counter()
                n += 1
        return n / (time.perf_counter() - first)

    bare: list[float] = []

    async def ours() -> list[float]:
        provider = LocalProvider("", threads, 4096)
        speeds = []
        for _ in range(5):
            bare.append(bare_once())
            c = await provider.complete(Request(messages, 128))
            speeds.append(float(c.extra["tokens_per_s"]))
        await provider.close()
        return speeds

    mine = asyncio.run(ours())
    b, m = statistics.median(bare), statistics.median(mine)
    return {
        "threads": threads,
        "bare_llama_cpp": round(b, 1),
        "agentbox_worker": round(m, 1),
        "ratio": round(m / b, 3),
        "target_ratio_min": 0.95,
    }


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="abbench-", dir="/tmp"))
    # The fake provider gets its own process, so it does not share a GIL with our client.
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert fake.stdout is not None
    fake_url = fake.stdout.readline().strip()
    (tmp / "bench.toml").write_text(bench_config(fake_url))
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
    raw = raw_latency(fake_url)
    direct = direct_latency(fake_url)
    through = asyncio.run(daemon_latency(sock))
    spread = asyncio.run(spread_latency(sock))
    spread_base = baseline_spread_commits(tmp / "spread-baseline.db")
    proc.terminate()
    proc.wait(60)
    fake.terminate()
    local = local_tokens_per_s()
    mqtt = bench_mqtt.main()
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
        "latency_one_at_a_time": {
            "raw_socket_call_to_fake_provider": percentiles(raw),
            "httpx_call_to_fake_provider": percentiles(direct),
            "through_agentbox": percentiles(through),
            "added_p50_ms": round((statistics.median(through) - statistics.median(raw)) * 1000, 2),
            "added_p50_ms_over_httpx": round(
                (statistics.median(through) - statistics.median(direct)) * 1000, 2
            ),
            "target_added_p50_ms": 2,
        },
        "latency_spread_one_every_60ms": {
            "tasks": SPREAD_N,
            "through_agentbox": percentiles(spread),
            "baseline_bare_full_commit": percentiles(spread_base),
        },
        "local_tokens_per_s": local,
        "mqtt": mqtt,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
