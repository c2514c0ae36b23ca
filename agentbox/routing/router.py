"""Chooses where a task runs (lane, provider, model) and says why; spends nothing."""

from __future__ import annotations

from dataclasses import dataclass

from agentbox.config import Settings
from agentbox.tasks.spec import ErrorCode, Route, SpecError, TaskSpec

LOCAL = "local"
CLOUD = "cloud"


@dataclass(frozen=True)
class Decision:
    lane: str
    route: Route


class Router:
    """Explicit pins win; `auto` picks the local model when it is enabled, else the cloud."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _local(self, reason: str, model: str = "") -> Decision:
        if not self.settings.local.enabled:
            raise SpecError(
                ErrorCode.provider_unavailable,
                "the local model is disabled (local.enabled = false)",
            )
        return Decision(
            LOCAL, Route(tier="local", provider=LOCAL, model=model or "default", reason=reason)
        )

    def _cloud(self, reason: str, provider: str | None = None, model: str = "") -> Decision:
        order = self.settings.cloud_order()
        if provider is None:
            if not order:
                raise SpecError(
                    ErrorCode.provider_unavailable,
                    "no cloud provider configured: add a [providers.NAME] section and"
                    " `agentbox keys set NAME`",
                )
            provider = order[0]
        conf = self.settings.providers[provider]
        return Decision(
            CLOUD, Route(tier="cloud", provider=provider, model=model or conf.model, reason=reason)
        )

    def decide(self, spec: TaskSpec) -> Decision:
        if spec.model:
            provider, _, model = spec.model.partition("/")
            if provider == LOCAL:
                return self._local("model pinned by the task", model)
            if provider not in self.settings.providers:
                raise SpecError(
                    ErrorCode.invalid_request,
                    f"model: no provider named {provider!r} in the configuration",
                )
            return self._cloud("model pinned by the task", provider, model)
        if spec.tier == LOCAL:
            return self._local("tier pinned by the task")
        if spec.tier == CLOUD:
            return self._cloud("tier pinned by the task")
        if self.settings.local.enabled:
            return self._local(f"auto ({self.settings.routing.mode}): local model first")
        return self._cloud(f"auto ({self.settings.routing.mode}): local model disabled")
