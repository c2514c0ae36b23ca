"""`agentbox fleet`: what each box on the broker reports and the alerts it raises, as text, JSON
or the live view. It only reads MQTT; it never talks to a box directly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import TextIO

import aiomqtt

from agentbox import keys
from agentbox.config import Loaded
from agentbox.fleet import text
from agentbox.fleet.alerts import at_least
from agentbox.fleet.model import Fleet
from agentbox.mqtt.connect import client_for, describe_error

EX_ALERT = 1
EX_UNAVAILABLE = 69
RETRY_S = 5.0


def new_fleet(loaded: Loaded) -> Fleet:
    return Fleet(loaded.settings.mqtt.prefix, loaded.settings.fleet)


def _client(loaded: Loaded) -> aiomqtt.Client:
    conf = loaded.settings.mqtt
    password = None
    with contextlib.suppress(keys.KeyStoreError):
        password = keys.resolve(keys.KeyStore(loaded.state_dir), keys.BROKER_KEY)[0]
    return client_for(conf, password, f"agentbox-fleet-{os.getpid()}", clean_start=True, timeout=10)


async def _read(client: aiomqtt.Client, fleet: Fleet) -> None:
    for topic in fleet.subscriptions():
        await client.subscribe(topic, qos=1)
    async for message in client.messages:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        with fleet.lock:
            fleet.take(str(message.topic), payload)


async def feed(loaded: Loaded, fleet: Fleet, say: Callable[[str], None]) -> None:
    """Keep `fleet` fed until cancelled, reconnecting; `say` hears of each connect and failure."""
    conf = loaded.settings.mqtt
    while True:
        try:
            async with _client(loaded) as client:
                say(f"connected to {conf.host}:{conf.port}")
                await _read(client, fleet)
        except aiomqtt.MqttError as exc:
            say(f"{describe_error(conf, exc)}; retrying in {RETRY_S:g} s")
        await asyncio.sleep(RETRY_S)


class Feeder:
    """`feed` on a thread of its own: reading the broker never waits for the screen.

    aiomqtt reads one packet per turn of the event loop, and a Textual app's loop turns slowly
    while it draws: on the app's loop, 5,000 boxes' reports queued up for seconds.
    """

    def __init__(self, loaded: Loaded, fleet: Fleet) -> None:
        self.loaded = loaded
        self.fleet = fleet
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    def start(self, say: Callable[[str], None]) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            self._task = loop.create_task(feed(self.loaded, self.fleet, say))
            ready.set()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._task)
            loop.close()

        self._thread = threading.Thread(target=run, name="fleet-feed", daemon=True)
        self._thread.start()
        ready.wait(5)

    def stop(self) -> None:
        if self._loop is not None and self._task is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
            self._thread.join(5)


async def watch(
    loaded: Loaded,
    *,
    once: bool,
    as_json: bool,
    wait_s: float,
    fail_on: str,
    out: TextIO = sys.stdout,
) -> int:
    """Listen and print: once after `wait_s` (exit 1 on an alert at `fail_on` or worse), or
    every `wait_s` until interrupted."""
    conf = loaded.settings.mqtt
    fleet = new_fleet(loaded)
    try:
        async with _client(loaded) as client:
            reader = asyncio.create_task(_read(client, fleet))
            try:
                while True:
                    await asyncio.wait({reader}, timeout=wait_s)
                    if reader.done():
                        reader.result()  # the connection failed: raise its error
                    fleet.sweep()
                    show(fleet, as_json, once, out)
                    if once:
                        return EX_ALERT if at_least(fleet.alerts(), fail_on) else 0
            finally:
                reader.cancel()
    except aiomqtt.MqttError as exc:
        print(f"agentbox: {describe_error(conf, exc)}", file=sys.stderr)
        return EX_UNAVAILABLE


def show(fleet: Fleet, as_json: bool, once: bool, out: TextIO) -> None:
    if as_json:
        # once: one document; live: one JSON line per refresh, for `jq` and log files
        out.write(json.dumps(fleet.document(), indent=2 if once else None) + "\n")
    else:
        if not once and out.isatty():
            out.write("\x1b[H\x1b[2J")  # clear the terminal between refreshes
        out.write(text.table(fleet.views()) + "\n\n" + text.alert_lines(fleet.alerts()) + "\n")
    out.flush()
