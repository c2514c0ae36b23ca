"""The live set of providers: the local worker, cloud providers built from config, their
circuit breakers and keys, and the transport they share. Rebuilt in place on reload, so
references to it stay valid."""

from __future__ import annotations

import logging
from typing import Any

from agentbox import keys, logs
from agentbox.agent.tools import FetchClient
from agentbox.providers import registry
from agentbox.providers.base import CloudProvider, Provider, ProviderError
from agentbox.providers.http import LIST_TIMEOUT
from agentbox.providers.local import LocalProvider
from agentbox.providers.seam import HttpxTransport, Transport
from agentbox.providers.transport import HttpClient
from agentbox.routing.breaker import Breaker
from agentbox.routing.router import LOCAL
from agentbox.settings import ProviderConfig, Settings

log = logging.getLogger("agentbox.providers")


class ProviderPool:
    def __init__(self, settings: Settings, keystore: keys.KeyStore) -> None:
        self.keystore = keystore
        # One connection slot per task the cloud lane may run; the agent's fetch tool has its
        # own client, so its pages never hold a provider's slot.
        self.client = HttpClient(settings.tasks.cloud_concurrency)
        for problem in self.client.proxy_problems():
            log.error("proxy setting ignored, calls it would carry fail: %s", problem)
        self.tool_http = FetchClient()
        local = settings.local
        self.local = LocalProvider(local.model_path, local.threads, local.context)
        self.providers: dict[str, Provider] = {LOCAL: self.local}
        self.breakers: dict[str, Breaker] = {}
        self.keys: dict[str, tuple[str | None, str]] = {}
        self.confs: dict[str, ProviderConfig] = {}
        self.configure(settings)

    def configure(self, settings: Settings) -> None:
        """Build or rebuild cloud providers and re-read their keys; breakers are kept."""
        local = settings.local
        self.local.configure(local.model_path, local.threads, local.context)
        self.client.resize(settings.tasks.cloud_concurrency)  # the lane's width may have changed
        for name in [n for n in self.providers if n != LOCAL and n not in settings.providers]:
            del self.providers[name]
            self.breakers.pop(name, None)
        for name, conf in settings.providers.items():
            old_key = self.keys.get(name, (None, ""))[0]
            self.keys[name] = keys.resolve(self.keystore, name, conf.kind)
            if name not in self.providers or self.confs.get(name) != conf:
                self.providers[name] = registry.build(
                    name, conf, self._key_of(name), self.client, local=self.local
                )
                self.confs[name] = conf
            breaker = self.breakers.setdefault(name, Breaker(name))
            if self.keys[name][0] != old_key:
                breaker.reset_auth()

    def _key_of(self, name: str) -> Any:
        return lambda: self.keys.get(name, (None, ""))[0]

    def secrets(self) -> set[str]:
        return {value for value, _ in self.keys.values() if value}

    def available(self, name: str) -> bool:
        breaker = self.breakers.get(name)
        return breaker is not None and breaker.available()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, conf in self.confs.items():
            if name not in self.breakers:
                continue
            _, source = self.keys.get(name, (None, ""))
            out[name] = {
                "kind": conf.kind,
                "model": conf.model,
                "key": source or None,
                "auth": conf.auth,
                **self.breakers[name].status(),
            }
        return out

    async def close(self) -> None:
        await self.local.close()
        await self.client.aclose()
        await self.tool_http.aclose()


async def test_key(
    name: str, conf: ProviderConfig, key: str | None, transport: Transport | None = None
) -> tuple[bool, str]:
    """Check a key with the provider's cheapest call (its model listing); spends nothing.
    By default on a client of its own (httpx, same proxies), never the providers' slots."""
    own = transport is None
    through = transport or HttpxTransport(LIST_TIMEOUT)
    provider: CloudProvider = registry.build(name, conf, lambda: key, through)
    try:
        models = await provider.list_models()
    except ProviderError as exc:
        # The provider may echo the key it was given; this runs outside the daemon's scrubber.
        return False, logs.mask(exc.message, {key}) if key else exc.message
    finally:
        if own:
            await through.aclose()
    listed = f"{len(models)} models"
    works = "the server answers" if conf.auth == "none" else "key works"
    if conf.model and models and conf.model not in models:
        return True, f"{works} ({listed}), but model {conf.model!r} is not among them"
    return True, f"{works} ({listed})"
