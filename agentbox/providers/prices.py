"""Pinned prices (USD per million tokens) and the cost of one completion. No network, ever."""

from __future__ import annotations

from dataclasses import dataclass

from agentbox.config import PriceConfig
from agentbox.providers.base import Completion

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


class PriceTable:
    def __init__(self, overrides: dict[str, PriceConfig] | None = None) -> None:
        self.prices = dict(PINNED)
        for prefix, p in (overrides or {}).items():
            self.prices[prefix] = Price(p.input, p.output, p.cached_input, p.cache_write)
        self._order = sorted(self.prices, key=len, reverse=True)

    def lookup(self, model: str) -> tuple[Price, bool]:
        """The price for a model id and whether it is known (else UNKNOWN is used)."""
        name = model.rsplit("/", maxsplit=1)[-1].lower()
        for prefix in self._order:
            if name.startswith(prefix.lower()):
                return self.prices[prefix], True
        return UNKNOWN, False

    def cost(self, c: Completion) -> tuple[float, bool]:
        """(USD, estimated) for one completion."""
        price, known = self.lookup(c.model)
        cached = price.input if price.cached_input is None else price.cached_input
        write = price.input if price.cache_write is None else price.cache_write
        usd = (
            c.input_tokens * price.input
            + c.cached_tokens * cached
            + c.cache_write_tokens * write
            + c.output_tokens * price.output
        ) / 1_000_000
        return usd, c.estimated or not known

    def worst_case(self, model: str, input_tokens: int, max_tokens: int) -> float:
        """The most a call can cost: all input uncached, every allowed output token used."""
        price, _ = self.lookup(model)
        return (input_tokens * price.input + max_tokens * price.output) / 1_000_000
