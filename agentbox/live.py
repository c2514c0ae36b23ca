"""The configuration in effect: a reload swaps it here, and the parts read it from here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agentbox.config import Loaded
from agentbox.providers.prices import PriceTable
from agentbox.routing.router import Router
from agentbox.settings import Settings


class Live:
    """Settings, prices and router as of the last (re)load; nobody keeps a copy of them."""

    def __init__(self, loaded: Loaded, router: Callable[[Settings], Router] = Router) -> None:
        self._router = router  # built again from each new configuration
        self.swap(loaded)

    @classmethod
    def of(cls, settings: Settings, state_dir: Path = Path(), device_id: str = "box") -> Live:
        """Settings without a file behind them (tests, tools), with a plain router."""
        return cls(Loaded(settings=settings, path=None, state_dir=state_dir, device_id=device_id))

    def swap(self, loaded: Loaded) -> None:
        """Put a newly read configuration in effect, all three parts at once."""
        settings = loaded.settings
        prices = PriceTable(settings.prices, settings.providers)
        router = self._router(settings)
        self.loaded, self.prices, self.router = loaded, prices, router

    @property
    def settings(self) -> Settings:
        return self.loaded.settings
