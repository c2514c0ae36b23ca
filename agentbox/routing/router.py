"""Chooses where a task runs (lane, provider, model) and says why; spends nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from agentbox.routing.features import Features, featurize
from agentbox.routing.heuristics import adjustments
from agentbox.routing.learned import BoxLearning
from agentbox.routing.model import LinearModel, shipped, sigmoid
from agentbox.settings import Settings
from agentbox.vocabulary import ErrorCode, Route, SpecError, TaskSpec

LOCAL = "local"
CLOUD = "cloud"


@dataclass(frozen=True)
class Decision:
    lane: str
    route: Route
    score: float | None = None  # p(heavy) from the model, for `auto` tasks
    threshold: float | None = None  # of the mode, with what this box learned
    features: list[str] = field(default_factory=list)  # what weighed most, strongest first


@dataclass(frozen=True)
class Assessment:
    """The model's view of a task: p(heavy), the mode's threshold, and why."""

    score: float
    threshold: float
    features: list[str]

    def onto(self, d: Decision) -> Decision:
        return replace(d, score=self.score, threshold=self.threshold, features=self.features)

    def reason(self) -> str:
        side = "heavy" if self.score >= self.threshold else "light"
        sign = ">=" if side == "heavy" else "<"
        why = ", ".join(self.features[:3]) or "no strong feature"
        return f"{side} ({self.score:.2f} {sign} {self.threshold:.2f}): {why}"


def local_model_name(configured: str) -> str:
    """The local model's name as its runs report it (the GGUF file's stem), so a task's
    `accepted` event names the model that will run it; "local" when there is none."""
    from agentbox.providers.base import ProviderError  # noqa: PLC0415 (the CLI's imports stay few)
    from agentbox.providers.local import resolve_model  # noqa: PLC0415

    try:
        return resolve_model(configured).stem
    except ProviderError:
        return LOCAL


class Router:
    """Pins win; `auto` scores the task with the trained model (plus what this box learned)
    and compares p(heavy) with the threshold of routing.mode."""

    def __init__(
        self,
        settings: Settings,
        available: Callable[[str], bool] = lambda _: True,
        spendable: Callable[[], str] = lambda: "",
        learning: BoxLearning | None = None,
    ) -> None:
        self.settings = settings
        self.available = available
        # "" while the caps allow spending, else the reason they do not
        self.spendable = spendable
        self.learning = learning
        self.model: LinearModel = learning.model if learning is not None else shipped()
        self.local_model = local_model_name(settings.local.model_path)

    def threshold(self) -> float:
        mode = self.settings.routing.mode
        if self.learning is not None:
            return self.learning.threshold(mode)
        return self.model.thresholds[mode]

    def assess(self, spec: TaskSpec) -> Assessment:
        return self._assess(spec, featurize(spec.text()))

    def _assess(self, spec: TaskSpec, f: Features) -> Assessment:
        delta = self.learning.state.delta if self.learning is not None else None
        z, why = self.model.explain(f, delta)
        fixed = adjustments(spec)
        z += sum(d for d, _ in fixed)
        parts = [f"{reason} {d:+.2f}" for d, reason in fixed] + why
        return Assessment(round(sigmoid(z), 3), round(self.threshold(), 3), parts)

    def learn(self, spec: TaskSpec, heavy: bool, kind: str) -> None:
        """A labeled example from this box's own work (no-op without on-box learning)."""
        if self.learning is not None:
            shift = sum(d for d, _ in adjustments(spec))
            f = featurize(spec.text())
            self.learning.observe(f, heavy, kind, self.settings.routing.mode, shift)

    def learn_pin(self, spec: TaskSpec, background: bool) -> None:
        """A tier a user pinned on a task is their label for that kind of prompt."""
        pinned = spec.tier in (LOCAL, CLOUD) and not spec.model and spec.kind != "agent"
        if pinned and not background:
            self.learn(spec, spec.tier == CLOUD, f"pinned_{spec.tier}")

    def _local(self, reason: str, model: str = "") -> Decision:
        if not self.settings.local.enabled:
            raise SpecError(
                ErrorCode.provider_unavailable,
                "the local model is disabled (local.enabled = false)",
            )
        route = Route(tier="local", provider=LOCAL, model=model or self.local_model, reason=reason)
        return Decision(LOCAL, route)

    def _cloud(
        self,
        reason: str,
        provider: str | None = None,
        model: str = "",
        heavy: bool = False,
        tools: bool = False,
    ) -> Decision:
        capped = self.spendable()
        if capped:
            raise SpecError(ErrorCode.budget_exceeded, capped)
        if provider is None:
            order = self.settings.cloud_order()
            if tools:
                order = [n for n in order if self.calls_tools(n)]
            if not order:
                raise SpecError(
                    ErrorCode.provider_unavailable,
                    "no cloud provider that calls tools is configured: agent tasks need one"
                    " (a provider with `tools = false` cannot take them)"
                    if tools and self.settings.cloud_order()
                    else "no cloud provider configured: add a [providers.NAME] section and"
                    " `agentbox keys set NAME`",
                )
            provider = next((n for n in order if self.available(n)), order[0])
        conf = self.settings.providers[provider]
        if not model:
            model = conf.heavy_model if heavy and conf.heavy_model else conf.model
        route = Route(tier="cloud", provider=provider, model=model, reason=reason)
        return Decision(CLOUD, route)

    def cloud_reachable(self) -> bool:
        return any(self.available(n) for n in self.settings.cloud_order())

    def calls_tools(self, name: str) -> bool:
        """The provider's capability (its class, and `tools` in its config)."""
        from agentbox.providers.registry import calls_tools  # noqa: PLC0415 (CLI imports stay few)

        return calls_tools(self.settings, name)

    def decide(self, spec: TaskSpec, background: bool = False) -> Decision:
        tools = spec.kind == "agent"
        if tools:
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
            return self._cloud("tier pinned by the task", tools=tools)
        if background and spec.kind != "agent":
            return self._local("background work stays on the local model")
        mode = self.settings.routing.mode
        a = self.assess(spec)
        why = f"{a.reason()} for {mode}"
        heavy = a.score >= self.model.heavy_model_at and mode != "cost"
        if spec.kind == "agent":
            cloud = self._cloud(
                f"agent task (tools need a cloud model): {why}", heavy=heavy, tools=True
            )
            return a.onto(cloud)
        if not self.settings.local.enabled:
            return a.onto(self._cloud(f"local model disabled; {why}"))
        if a.score < a.threshold:
            return a.onto(self._local(why))
        if not self.settings.providers:
            return a.onto(self._local(f"no cloud provider configured; {why}"))
        if not self.cloud_reachable() and self.settings.routing.offline == "local":
            return a.onto(self._local(f"offline: no cloud provider reachable; {why}"))
        capped = self.spendable()
        if capped:
            return a.onto(self._local(f"budget: {capped}; {why}"))
        return a.onto(self._cloud(why, heavy=heavy))

    def _check_agent(self, spec: TaskSpec, background: bool) -> None:
        """Agent tasks call tools: they run where the provider can (not the local model)."""
        pinned = (spec.model or "").partition("/")[0]
        where = LOCAL if spec.tier == LOCAL else pinned
        if where and where in (LOCAL, *self.settings.providers) and not self.calls_tools(where):
            raise SpecError(
                ErrorCode.invalid_request,
                "agent tasks run on a cloud model (the local model does not call tools):"
                " use tier 'auto' or 'cloud'"
                if where == LOCAL
                else f"agent tasks call tools, and provider {where!r} has `tools = false`:"
                " pin another provider or none",
            )
        if background and spec.tier != CLOUD and not pinned:
            raise SpecError(
                ErrorCode.invalid_request,
                "a scheduled agent task spends cloud money, and background work stays local"
                " unless its task says otherwise: set tier 'cloud' in its task",
            )
