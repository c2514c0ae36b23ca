"""Provider classes by `kind`, and the one way to build a cloud provider from config."""

from __future__ import annotations

from collections.abc import Callable

from agentbox.providers.anthropic import AnthropicProvider
from agentbox.providers.base import CloudProvider, LocalCounter
from agentbox.providers.gemini import GeminiProvider
from agentbox.providers.openai import OpenAIProvider
from agentbox.providers.seam import Transport
from agentbox.settings import ProviderConfig

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
