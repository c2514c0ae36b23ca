"""A staged rollout over MQTT: ask a first wave of boxes to update, wait until each reports
`succeeded` and then a health report from the new version, then ask the rest. A first-wave
box that rolls back, fails or says nothing in time stops the rollout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes

from agentbox import keys
from agentbox.config import Loaded
from agentbox.mqtt.connect import client_for, describe_error, properties
from agentbox.mqtt.payloads import encode
from agentbox.mqtt.signing import sign

FAILED = ("rolled_back", "rollback_failed", "failed")
HMAC_KEY = "mqtt-hmac"
DISCOVER_S = 2.0  # retained info messages arrive at once; this bounds waiting for a pool's


@dataclass
class Target:
    device_id: str
    wave: int
    state: str = "waiting"  # waiting | requested | <update states> | healthy | failed | timeout
    error: str | None = None
    token: float | None = None  # the box's requested_at for our request
    succeeded_at: float | None = None  # our clock when it said succeeded
    asked_at: float = 0.0

    @property
    def done(self) -> bool:
        return self.state in ("healthy", "failed", "timeout")

    def view(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "wave": self.wave, "state": self.state,
                "error": self.error}  # fmt: skip


@dataclass
class Plan:
    prefix: str
    version: str
    request: dict[str, Any]  # url, sha256, signature, version
    pool: str = ""
    boxes: list[str] = field(default_factory=list)
    wave: int = 1
    timeout_s: float = 1800.0
    progress: Callable[[str], None] = lambda line: None


class Rollout:
    """What the broker tells us about the boxes of one rollout, and what each has reached."""

    def __init__(self, plan: Plan, secret: str | None) -> None:
        self.plan, self.secret = plan, secret
        self.prefix = plan.prefix.rstrip("/")
        self.targets: dict[str, Target] = {}
        self.pools: dict[str, str | None] = {}  # device -> pool, from retained info
        self.changed = asyncio.Event()

    def subscriptions(self) -> list[str]:
        return [f"{self.prefix}/+/{kind}" for kind in ("info", "health", "update/event")]

    # ---- what arrives --------------------------------------------------------------------

    def take(self, topic: str, payload: bytes) -> None:
        rest = topic.removeprefix(self.prefix + "/")
        device, _, kind = rest.partition("/")
        try:
            body = json.loads(payload)
        except ValueError:
            return
        if rest == topic or not isinstance(body, dict):
            return
        if kind == "info":
            self.pools[device] = body.get("pool")
        t = self.targets.get(device)
        if t is None or t.done or t.state == "waiting":
            return
        if kind == "update/event" and body.get("event") == "update_request":
            self._answered(t, body)
        elif kind == "update/event" and body.get("event") == "update":
            self._update(t, body)
        elif kind == "health":
            self._update(t, body.get("update") or {})
            if t.succeeded_at is not None and body.get("version") == self.plan.version:
                self._set(t, "healthy")
        self.changed.set()

    def _answered(self, t: Target, body: dict[str, Any]) -> None:
        if body.get("state") == "rejected":
            err = body.get("error") or {}
            self._set(t, "failed", f"request rejected: {err.get('message')}")
        elif body.get("request") == "current":
            self._set(t, "succeeded")
            t.succeeded_at = time.monotonic()
        else:
            t.token = body.get("requested_at")
            self._update(t, body.get("update") or {})

    def _update(self, t: Target, update: dict[str, Any]) -> None:
        """An update state of this box counts when it is about our request."""
        if t.token is None or update.get("requested_at") != t.token:
            return
        state = str(update.get("state"))
        if state in FAILED:
            self._set(t, "failed", f"{state}: {update.get('error')}")
        elif state == "succeeded" and t.succeeded_at is None:
            self._set(t, "succeeded")
            t.succeeded_at = time.monotonic()
        elif t.succeeded_at is None and state != t.state:
            self._set(t, state)

    def _set(self, t: Target, state: str, error: str | None = None) -> None:
        if state == t.state:
            return
        t.state, t.error = state, error
        self.plan.progress(f"{t.device_id}: {state}" + (f" ({error})" if error else ""))

    # ---- what we do ----------------------------------------------------------------------

    def members(self) -> list[str]:
        if self.plan.boxes:
            return list(dict.fromkeys(self.plan.boxes))
        return sorted(d for d, p in self.pools.items() if p == self.plan.pool)

    async def ask(self, client: aiomqtt.Client, t: Target) -> None:
        topic = f"{self.prefix}/{t.device_id}/update"
        payload = encode(self.plan.request)
        props = None
        if self.secret:
            ts = f"{time.time():.3f}"
            props = properties(PacketTypes.PUBLISH)
            props.UserProperty = [("ts", ts), ("signature", sign(self.secret, topic, t.device_id,
                                                                 ts, payload))]  # fmt: skip
        t.state, t.asked_at = "requested", time.monotonic()
        self.plan.progress(f"{t.device_id}: update to {self.plan.version} requested")
        await client.publish(topic, payload, qos=1, properties=props)

    async def wave(self, client: aiomqtt.Client, devices: list[str], number: int) -> list[Target]:
        """Ask every box of the wave, then wait until each is healthy, failed or late."""
        wave = [self.targets.setdefault(d, Target(d, number)) for d in devices]
        for t in wave:
            await self.ask(client, t)
        while not all(t.done for t in wave):
            now = time.monotonic()
            for t in wave:
                if not t.done and now - t.asked_at > self.plan.timeout_s:
                    self._set(t, "timeout", f"no outcome within {self.plan.timeout_s:g} s")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 1.0)
        return wave

    async def run(self, client: aiomqtt.Client) -> dict[str, Any]:
        if not self.plan.boxes:
            await asyncio.sleep(DISCOVER_S)
        members = self.members()
        if not members:
            raise RolloutError(f"no box of pool {self.plan.pool!r} has reported on this broker")
        first, rest = members[: self.plan.wave], members[self.plan.wave :]
        self.plan.progress(
            f"rolling out {self.plan.version} to {len(members)} box(es): first wave"
            f" {', '.join(first)}" + (f", then {len(rest)} more" if rest else "")
        )
        bad = [t for t in await self.wave(client, first, 1) if t.state != "healthy"]
        stopped = bool(bad) and bool(rest)
        if not bad and rest:
            bad = [t for t in await self.wave(client, rest, 2) if t.state != "healthy"]
        if stopped:
            self.plan.progress(
                f"stopped: {', '.join(t.device_id for t in bad)} failed in the first wave;"
                f" {len(rest)} box(es) not asked"
            )
        return {
            "version": self.plan.version,
            "ok": not bad,
            "stopped": stopped,
            "failed": [t.device_id for t in bad],
            "not_asked": rest if stopped else [],
            "boxes": [t.view() for t in self.targets.values()],
        }


class RolloutError(Exception):
    """The rollout could not start (no box to update, no broker)."""


async def roll_out(loaded: Loaded, plan: Plan) -> dict[str, Any]:
    """Connect as the operator (the broker password and the request signing key from this
    machine's key store), run the rollout, return its summary."""
    conf = loaded.settings.mqtt
    store = keys.KeyStore(loaded.state_dir)
    secrets: dict[str, str | None] = {}
    for name in (keys.BROKER_KEY, HMAC_KEY):
        secrets[name] = None
        with contextlib.suppress(keys.KeyStoreError):
            secrets[name] = keys.resolve(store, name)[0]
    rollout = Rollout(plan, secrets[HMAC_KEY])
    client = client_for(
        conf, secrets[keys.BROKER_KEY], f"agentbox-rollout-{os.getpid()}", clean_start=True,
        timeout=10,
    )  # fmt: skip
    try:
        async with client:
            for topic in rollout.subscriptions():
                await client.subscribe(topic, qos=1)
            reader = asyncio.create_task(_read(client, rollout))
            try:
                return await rollout.run(client)
            finally:
                reader.cancel()
    except aiomqtt.MqttError as exc:
        raise RolloutError(describe_error(conf, exc)) from None


async def _read(client: aiomqtt.Client, rollout: Rollout) -> None:
    async for message in client.messages:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        rollout.take(str(message.topic), payload)
