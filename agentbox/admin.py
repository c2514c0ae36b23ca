"""The console's operations on the control socket: keys, settings, broker, network check.

They run in the daemon (the console reaches it only through the owner-only socket); a key
travels in a request only to be tested or stored, and is never logged or echoed back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agentbox import config, keys, netcheck
from agentbox.config import ConfigError
from agentbox.health import Parts, addresses
from agentbox.mqtt.connect import check_broker
from agentbox.routing.pool import test_key
from agentbox.settings import MqttConfig
from agentbox.vocabulary import Op

if TYPE_CHECKING:
    from agentbox.daemon import Daemon


class Admin:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    def ops(self) -> dict[str, Op]:
        return {
            "keys": self.keys,
            "key_test": self.key_test,
            "key_set": self.key_set,
            "key_delete": self.key_delete,
            "provider_add": self.provider_add,
            "settings": self.settings,
            "settings_set": self.settings_set,
            "network": self.network,
            "broker": self.broker,
            "broker_test": self.broker_test,
            "broker_set": self.broker_set,
        }

    # ---- providers and their keys ------------------------------------------------------

    async def keys(self, req: dict[str, Any]) -> dict[str, Any]:
        states = self.d.pool.status()
        providers = []
        for name, conf in self.d.loaded.settings.providers.items():
            info = keys.describe(self.d.keystore, name, conf.kind)
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
        configured = self.d.loaded.settings.providers
        return {
            "providers": providers,
            "addable": [n for n in config.STARTERS if n not in configured],
        }

    async def provider_add(self, req: dict[str, Any]) -> dict[str, Any]:
        name = str(req.get("name", ""))
        if name not in config.STARTERS:
            raise ValueError(
                f"unknown provider {name!r}; choose one of {', '.join(config.STARTERS)}"
            )
        return await self.settings_set({"changes": {"providers": {name: config.STARTERS[name]}}})

    def _provider(self, req: dict[str, Any]) -> tuple[str, Any]:
        name = str(req.get("name", ""))
        conf = self.d.loaded.settings.providers.get(name)
        if conf is None:
            raise ValueError(f"no provider named {name!r} in the configuration")
        return name, conf

    async def key_test(self, req: dict[str, Any]) -> dict[str, Any]:
        name, conf = self._provider(req)
        key = req.get("key") or keys.resolve(self.d.keystore, name, conf.kind)[0]
        ok, message = await test_key(name, conf, key)
        return {"ok": ok, "message": message}

    def _store_key(self, name: str, value: Any) -> None:
        try:
            self.d.keystore.set(name, str(value))
        except keys.KeyStoreError as exc:
            raise ValueError(str(exc)) from None

    async def key_set(self, req: dict[str, Any]) -> dict[str, Any]:
        name, _ = self._provider(req)
        self._store_key(name, req.get("key", ""))
        await self.d.reload()
        return {"saved": True, "last4": keys.describe(self.d.keystore, name).last4 or None}

    async def key_delete(self, req: dict[str, Any]) -> dict[str, Any]:
        name, conf = self._provider(req)
        deleted = self.d.keystore.delete(name)
        await self.d.reload()
        still = keys.describe(self.d.keystore, name, conf.kind).source
        return {"deleted": deleted, "still_from": still or None}

    # ---- budget and routing ------------------------------------------------------------

    async def settings(self, req: dict[str, Any]) -> dict[str, Any]:
        s = self.d.loaded.settings.model_dump(mode="json")
        return {
            "settings": {sec: {k: s[sec][k] for k in ks} for sec, ks in config.EDITABLE.items()}
        }

    async def settings_set(self, req: dict[str, Any]) -> dict[str, Any]:
        changes = req.get("changes")
        if not isinstance(changes, dict) or not all(isinstance(v, dict) for v in changes.values()):
            raise ValueError("'changes' must map sections to values")
        try:
            config.save_overlay(changes, self.d.config_arg)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        message = await self.d.reload()
        return {"saved": True, "reload": message}

    # ---- network and broker ------------------------------------------------------------

    async def network(self, req: dict[str, Any]) -> dict[str, Any]:
        where = netcheck.target(self.d.loaded.settings)
        parts = Parts("network")
        nets = parts.get("interfaces", addresses)
        return {
            "interfaces": nets,
            "internet": await netcheck.check(where, nets),
            "unavailable": parts.unavailable,
        }

    async def broker(self, req: dict[str, Any]) -> dict[str, Any]:
        conf = self.d.loaded.settings.mqtt
        bridge = self.d.bridge
        return {
            "mqtt": {k: getattr(conf, k) for k in config.EDITABLE["mqtt"]},
            "password_set": bool(keys.resolve(self.d.keystore, keys.BROKER_KEY)[0]),
            "connected": bool(bridge and bridge.connected),
            "error": bridge.last_error if bridge else "",
        }

    def _broker_conf(self, req: dict[str, Any]) -> MqttConfig:
        changes = req.get("mqtt") or {}
        if not isinstance(changes, dict):
            raise ValueError("'mqtt' must be an object")
        bad = [k for k in changes if k not in config.EDITABLE["mqtt"]]
        if bad:
            raise ValueError(f"mqtt.{bad[0]} cannot be changed from the console")
        current = self.d.loaded.settings.mqtt.model_dump()
        try:
            return MqttConfig(**{**current, **changes})
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"mqtt.{field}: {err['msg']}") from None

    async def broker_test(self, req: dict[str, Any]) -> dict[str, Any]:
        conf = self._broker_conf(req)
        password = req.get("password") or keys.resolve(self.d.keystore, keys.BROKER_KEY)[0]
        identifier = f"agentbox-{self.d.loaded.device_id}-check"
        ok, message = await check_broker(conf, password, identifier)
        return {"ok": ok, "message": message}

    async def broker_set(self, req: dict[str, Any]) -> dict[str, Any]:
        conf = self._broker_conf(req)  # refuse bad values before anything is written
        if req.get("password"):
            self._store_key(keys.BROKER_KEY, req["password"])
        changes = {k: getattr(conf, k) for k in req.get("mqtt") or {}}
        return await self.settings_set({"changes": {"mqtt": changes}})
