"""The console's operations on the control socket: keys, settings, broker, network check.

They run in the daemon (the console reaches it only through the owner-only socket); a key
travels in a request only to be tested or stored, and is never logged or echoed back. They
take what they need explicitly (the settings in effect, the key store, a few callables), so
this module knows nothing of the daemon that wires them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agentbox import config, keys, netcheck
from agentbox.config import ConfigError
from agentbox.health import Parts, addresses
from agentbox.mqtt.connect import check_broker
from agentbox.operations import Caller, Empty, Operation, typed_op
from agentbox.routing.pool import test_key
from agentbox.settings import MqttConfig
from agentbox.vocabulary import ErrorCode, SpecError

if TYPE_CHECKING:
    from agentbox.live import Live

Reply = dict[str, Any]


@dataclass(frozen=True)
class ProviderKey:
    name: str = ""
    key: str | None = None


@dataclass(frozen=True)
class SettingsChange:
    changes: dict[str, dict[str, Any]] = field(metadata={"must": "map sections to values"})


@dataclass(frozen=True)
class BrokerChange:
    mqtt: dict[str, Any] | None = None
    password: str | None = None


def _sections(raw: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise SpecError(ErrorCode.invalid_request, "'changes' must map sections to values")
    return raw


class ConsoleOps:
    """The console's operations on explicit dependencies: `live` gives the settings in
    effect (a reload replaces them), `providers` the pool's states, `link` the MQTT bridge's
    (connected, last error), `reload` re-reads configuration and keys."""

    def __init__(
        self,
        *,
        live: Live,
        keystore: keys.KeyStore,
        providers: Callable[[], dict[str, dict[str, Any]]],
        link: Callable[[], tuple[bool, str]],
        reload: Callable[[], Awaitable[str]],
        config_arg: str | None,
    ) -> None:
        self.live = live
        self.keystore = keystore
        self._providers = providers
        self._link = link
        self._reload = reload
        self.config_arg = config_arg

    def ops(self) -> list[Operation[Any, Any]]:
        return [
            typed_op("keys", Empty, self.keys),
            typed_op("key_test", ProviderKey, self.key_test),
            typed_op("key_set", ProviderKey, self.key_set),
            typed_op("key_delete", ProviderKey, self.key_delete),
            typed_op("provider_add", ProviderKey, self.provider_add),
            typed_op("settings", Empty, self.settings),
            typed_op("settings_set", SettingsChange, self.settings_set, changes=_sections),
            typed_op("network", Empty, self.network),
            typed_op("broker", Empty, self.broker),
            typed_op("broker_test", BrokerChange, self.broker_test),
            typed_op("broker_set", BrokerChange, self.broker_set),
        ]

    # ---- providers and their keys ------------------------------------------------------

    async def keys(self, _: Empty, __: Caller) -> Reply:
        states = self._providers()
        providers = []
        for name, conf in self.live.settings.providers.items():
            info = keys.describe(self.keystore, name, conf.kind)
            providers.append(
                {
                    "name": name,
                    "kind": conf.kind,
                    "model": conf.model,
                    "key": info.source or None,
                    "last4": info.last4 or None,
                    "state": states.get(name, {}).get("state", "ok"),
                }
            )
        configured = self.live.settings.providers
        return {
            "providers": providers,
            "addable": [n for n in config.STARTERS if n not in configured],
        }

    async def provider_add(self, req: ProviderKey, _: Caller) -> Reply:
        if req.name not in config.STARTERS:
            raise ValueError(
                f"unknown provider {req.name!r}; choose one of {', '.join(config.STARTERS)}"
            )
        return await self._save({"providers": {req.name: config.STARTERS[req.name]}})

    def _provider(self, name: str) -> Any:
        conf = self.live.settings.providers.get(name)
        if conf is None:
            raise ValueError(f"no provider named {name!r} in the configuration")
        return conf

    async def key_test(self, req: ProviderKey, _: Caller) -> Reply:
        conf = self._provider(req.name)
        key = req.key or keys.resolve(self.keystore, req.name, conf.kind)[0]
        ok, message = await test_key(req.name, conf, key)
        return {"ok": ok, "message": message}

    def _store_key(self, name: str, value: str) -> None:
        try:
            self.keystore.set(name, value)
        except keys.KeyStoreError as exc:
            raise ValueError(str(exc)) from None

    async def key_set(self, req: ProviderKey, _: Caller) -> Reply:
        self._provider(req.name)
        self._store_key(req.name, req.key or "")
        await self._reload()
        return {"saved": True, "last4": keys.describe(self.keystore, req.name).last4 or None}

    async def key_delete(self, req: ProviderKey, _: Caller) -> Reply:
        conf = self._provider(req.name)
        deleted = self.keystore.delete(req.name)
        await self._reload()
        still = keys.describe(self.keystore, req.name, conf.kind).source
        return {"deleted": deleted, "still_from": still or None}

    # ---- budget and routing ------------------------------------------------------------

    async def settings(self, _: Empty, __: Caller) -> Reply:
        s = self.live.settings.model_dump(mode="json")
        return {
            "settings": {sec: {k: s[sec][k] for k in ks} for sec, ks in config.EDITABLE.items()}
        }

    async def settings_set(self, req: SettingsChange, _: Caller) -> Reply:
        return await self._save(req.changes)

    async def _save(self, changes: dict[str, dict[str, Any]]) -> Reply:
        try:
            config.save_overlay(changes, self.config_arg)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        message = await self._reload()
        return {"saved": True, "reload": message}

    # ---- network and broker ------------------------------------------------------------

    async def network(self, _: Empty, __: Caller) -> Reply:
        where = netcheck.target(self.live.settings)
        parts = Parts("network")
        nets = parts.get("interfaces", addresses)
        return {
            "interfaces": nets,
            "internet": await netcheck.check(where, nets),
            "unavailable": parts.unavailable,
        }

    async def broker(self, _: Empty, __: Caller) -> Reply:
        conf = self.live.settings.mqtt
        connected, error = self._link()
        return {
            "mqtt": {k: getattr(conf, k) for k in config.EDITABLE["mqtt"]},
            "password_set": bool(keys.resolve(self.keystore, keys.BROKER_KEY)[0]),
            "connected": connected,
            "error": error,
        }

    def _broker_conf(self, req: BrokerChange) -> MqttConfig:
        changes = req.mqtt or {}
        bad = [k for k in changes if k not in config.EDITABLE["mqtt"]]
        if bad:
            raise ValueError(f"mqtt.{bad[0]} cannot be changed from the console")
        current = self.live.settings.mqtt.model_dump()
        try:
            return MqttConfig(**{**current, **changes})
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"mqtt.{field}: {err['msg']}") from None

    async def broker_test(self, req: BrokerChange, _: Caller) -> Reply:
        conf = self._broker_conf(req)
        password = req.password or keys.resolve(self.keystore, keys.BROKER_KEY)[0]
        identifier = f"agentbox-{self.live.loaded.device_id}-check"
        ok, message = await check_broker(conf, password, identifier)
        return {"ok": ok, "message": message}

    async def broker_set(self, req: BrokerChange, _: Caller) -> Reply:
        conf = self._broker_conf(req)  # refuse bad values before anything is written
        if req.password:
            self._store_key(keys.BROKER_KEY, req.password)
        changes = {k: getattr(conf, k) for k in req.mqtt or {}}
        return await self._save({"mqtt": changes})
