"""Provider classes by `kind`, and the one way to build a cloud provider from config."""

from __future__ import annotations

from collections.abc import Callable

from agentbox.providers.anthropic import AnthropicProvider
from agentbox.providers.base import CloudProvider, LocalCounter
from agentbox.providers.gemini import GeminiProvider
from agentbox.providers.local import LocalProvider
from agentbox.providers.openai import OpenAIProvider
from agentbox.providers.seam import Transport
from agentbox.settings import ProviderConfig, Settings

KINDS: dict[str, type[OpenAIProvider] | type[AnthropicProvider] | type[GeminiProvider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
}


def build(
    name: str,
    conf: ProviderConfig,
    key: Callable[[], str | None],
    client: Transport,
    local: LocalCounter | None = None,
) -> CloudProvider:
    """`local` counts tokens for an OpenAI-compatible server that reports none."""
    provider = KINDS[conf.kind](name, conf, key, client)
    if isinstance(provider, OpenAIProvider):
        provider.local = local
    built: CloudProvider = provider
    return built


def calls_tools(settings: Settings, name: str) -> bool:
    """Whether provider `name` can run an agent's tool calls: its class's capability, which a
    provider's `tools = false` turns off (an OpenAI-compatible server without them)."""
    if name == LocalProvider.kind:
        return LocalProvider.calls_tools
    conf = settings.providers.get(name)
    return conf is not None and conf.tools and KINDS[conf.kind].calls_tools
