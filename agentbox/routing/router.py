"""Chooses where a task runs (lane, provider, model) and says why; spends nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agentbox.config import Settings
from agentbox.routing.heuristics import HEAVY_MODEL_AT, THRESHOLDS, assess
from agentbox.vocabulary import ErrorCode, Route, SpecError, TaskSpec

LOCAL = "local"
CLOUD = "cloud"


@dataclass(frozen=True)
class Decision:
    lane: str
    route: Route
    score: float | None = None


class Router:
    """Pins win; `auto` scores the task and compares with the threshold of routing.mode."""

    def __init__(
        self,
        settings: Settings,
        available: Callable[[str], bool] = lambda _: True,
        spendable: Callable[[], str] = lambda: "",
    ) -> None:
        self.settings = settings
        self.available = available
        # "" while the caps allow spending, else the reason they do not
        self.spendable = spendable

    def _local(self, reason: str, model: str = "", score: float | None = None) -> Decision:
        if not self.settings.local.enabled:
            raise SpecError(
                ErrorCode.provider_unavailable,
                "the local model is disabled (local.enabled = false)",
            )
        route = Route(tier="local", provider=LOCAL, model=model or "default", reason=reason)
        return Decision(LOCAL, route, score)

    def _cloud(
        self,
        reason: str,
        provider: str | None = None,
        model: str = "",
        heavy: bool = False,
        score: float | None = None,
    ) -> Decision:
        capped = self.spendable()
        if capped:
            raise SpecError(ErrorCode.budget_exceeded, capped)
        if provider is None:
            order = self.settings.cloud_order()
            if not order:
                raise SpecError(
                    ErrorCode.provider_unavailable,
                    "no cloud provider configured: add a [providers.NAME] section and"
                    " `agentbox keys set NAME`",
                )
            provider = next((n for n in order if self.available(n)), order[0])
        conf = self.settings.providers[provider]
        if not model:
            model = conf.heavy_model if heavy and conf.heavy_model else conf.model
        route = Route(tier="cloud", provider=provider, model=model, reason=reason)
        return Decision(CLOUD, route, score)

    def cloud_reachable(self) -> bool:
        return any(self.available(n) for n in self.settings.cloud_order())

    def decide(self, spec: TaskSpec, background: bool = False) -> Decision:
        if spec.kind == "agent":
            self._check_agent(spec, background)
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
        if background and spec.kind != "agent":
            return self._local("background work stays on the local model")
        mode = self.settings.routing.mode
        a = assess(spec)
        why = ", ".join(a.reasons)
        heavy = a.score >= HEAVY_MODEL_AT and mode != "cost"
        if spec.kind == "agent":
            return self._cloud(f"agent task (tools need a cloud model): {why}", heavy=heavy)
        if not self.settings.local.enabled:
            return self._cloud(f"local model disabled; {why}", score=a.score)
        if a.score < THRESHOLDS[mode] or not self.settings.providers:
            return self._local(
                f"light ({a.score} < {THRESHOLDS[mode]} for {mode}): {why}", score=a.score
            )
        if not self.cloud_reachable() and self.settings.routing.offline == "local":
            return self._local(f"offline: no cloud provider reachable; {why}", score=a.score)
        capped = self.spendable()
        if capped:
            return self._local(f"budget: {capped}; {why}", score=a.score)
        return self._cloud(
            f"heavy ({a.score} >= {THRESHOLDS[mode]} for {mode}): {why}", heavy=heavy, score=a.score
        )

    def _check_agent(self, spec: TaskSpec, background: bool) -> None:
        """Agent tasks call tools, which the local model cannot: they run on a cloud model."""
        pinned = (spec.model or "").partition("/")[0]
        if LOCAL in (spec.tier, pinned):
            raise SpecError(
                ErrorCode.invalid_request,
                "agent tasks run on a cloud model (the local model does not call tools):"
                " use tier 'auto' or 'cloud'",
            )
        if background and spec.tier != CLOUD and not pinned:
            raise SpecError(
                ErrorCode.invalid_request,
                "a scheduled agent task spends cloud money, and background work stays local"
                " unless its task says otherwise: set tier 'cloud' in its task",
            )
