"""Pinned prices (USD per million tokens) and the cost of one completion. No network, ever."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from agentbox.providers.base import Completion
from agentbox.settings import PriceConfig, ProviderConfig

PRICES_AS_OF = "2026-11-01"


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cached_input: float | None = None  # None: cache reads cost the same as input
    cache_write: float | None = None  # None: cache writes cost the same as input


# Keys are model id prefixes; the longest matching prefix wins, so dated snapshots
# ("claude-sonnet-4-5-20250929") find their family.
PINNED: dict[str, Price] = {
    # OpenAI
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-5-nano": Price(0.05, 0.40, 0.005),
    "gpt-5-mini": Price(0.25, 2.00, 0.025),
    "gpt-5": Price(1.25, 10.00, 0.125),
    "o4-mini": Price(1.10, 4.40, 0.275),
    "o3-mini": Price(1.10, 4.40, 0.55),
    "o3": Price(2.00, 8.00, 0.50),
    # Anthropic: cache reads 0.1x input, 5-minute cache writes 1.25x input
    "claude-3-5-haiku": Price(0.80, 4.00, 0.08, 1.00),
    "claude-haiku-4-5": Price(1.00, 5.00, 0.10, 1.25),
    "claude-sonnet-4": Price(3.00, 15.00, 0.30, 3.75),
    "claude-3-7-sonnet": Price(3.00, 15.00, 0.30, 3.75),
    "claude-opus-4-5": Price(5.00, 25.00, 0.50, 6.25),
    "claude-opus-4": Price(15.00, 75.00, 1.50, 18.75),
    # Gemini (prompts up to 200k tokens)
    "gemini-2.5-flash-lite": Price(0.10, 0.40, 0.025),
    "gemini-2.5-flash": Price(0.30, 2.50, 0.075),
    "gemini-2.5-pro": Price(1.25, 10.00, 0.31),
    "gemini-2.0-flash-lite": Price(0.075, 0.30),
    "gemini-2.0-flash": Price(0.10, 0.40, 0.025),
}
# An unknown model is charged as if it were the dearest common one, and flagged estimated:
# under-counting is the failure users of other gateways complain about.
UNKNOWN = Price(15.00, 75.00)
FREE = Price(0.0, 0.0)
LOCAL_SUFFIXES = (".local", ".lan", ".home.arpa", ".internal", ".localhost")
CGNAT = ipaddress.ip_network("100.64.0.0/10")  # Tailscale and other overlay networks


def local_address(url: str) -> bool:
    """Whether a URL's host is loopback, private or link-local (by address or by a name
    reserved for local networks, which cannot resolve on the internet)."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if host == "localhost" or host.endswith(LOCAL_SUFFIXES):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip in CGNAT


def free_by_default(conf: ProviderConfig) -> bool:
    """Models the table does not know cost nothing on this provider: it takes no key and sits
    on this box or the local network, so nobody has an account to bill, and it names no
    price of its own."""
    return conf.auth == "none" and conf.price_in is None and local_address(conf.base_url)


class PriceTable:
    """Prices by model id prefix, and what each provider's own settings say first: its
    price_in/price_out for every model it serves; for a keyless server on a local address
    (ProviderConfig.free_by_default) nothing for models the table does not know."""

    def __init__(
        self,
        overrides: Mapping[str, PriceConfig] | None = None,
        providers: Mapping[str, ProviderConfig] | None = None,
    ) -> None:
        self.prices = dict(PINNED)
        for prefix, p in (overrides or {}).items():
            self.prices[prefix] = Price(p.input, p.output, p.cached_input, p.cache_write)
        self._order = sorted(self.prices, key=len, reverse=True)
        self._providers = dict(providers or {})

    def lookup(self, model: str, provider: str | None = None) -> tuple[Price, bool]:
        """The price for a model id served by `provider` and whether it is known (else
        UNKNOWN is used)."""
        conf = self._providers.get(provider or "")
        if conf is not None and conf.price_in is not None and conf.price_out is not None:
            return Price(conf.price_in, conf.price_out), True
        name = model.rsplit("/", maxsplit=1)[-1].lower()
        for prefix in self._order:
            if name.startswith(prefix.lower()):
                return self.prices[prefix], True
        if conf is not None and free_by_default(conf):
            return FREE, True
        return UNKNOWN, False

    def warnings(self) -> list[str]:
        """Keyless providers whose configured models would be billed at the dearest price."""
        out = []
        for name, conf in self._providers.items():
            unknown = [
                m for m in (conf.model, conf.heavy_model) if m and not self.lookup(m, name)[1]
            ]
            if conf.auth == "none" and unknown:
                out.append(
                    f"providers.{name} takes no key but {conf.base_url or 'its base_url'} is"
                    f" not a loopback or private address, and the price table does not know"
                    f" {unknown[0]!r}: it is billed at the dearest price"
                    f" (${UNKNOWN.input:g}/${UNKNOWN.output:g} per million tokens); set"
                    " price_in and price_out (0 for a free server)"
                )
        return out

    def cost(self, c: Completion, provider: str | None = None) -> tuple[float, bool]:
        """(USD, estimated) for one completion."""
        price, known = self.lookup(c.model, provider)
        cached = price.input if price.cached_input is None else price.cached_input
        write = price.input if price.cache_write is None else price.cache_write
        usd = (
            c.input_tokens * price.input
            + c.cached_tokens * cached
            + c.cache_write_tokens * write
            + c.output_tokens * price.output
        ) / 1_000_000
        return usd, c.estimated or not known

    def worst_case(
        self, model: str, input_tokens: int, max_tokens: int, provider: str | None = None
    ) -> float:
        """The most a call can cost: all input uncached, every allowed output token used."""
        price, _ = self.lookup(model, provider)
        return (input_tokens * price.input + max_tokens * price.output) / 1_000_000
