"""A provider runner on the real pool, store and ledger, for routing and agent tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentbox import keys
from agentbox.providers.prices import PriceTable
from agentbox.routing.budget import Budget
from agentbox.routing.pool import ProviderPool
from agentbox.routing.router import Router
from agentbox.routing.runner import Outcome, ProviderRunner
from agentbox.settings import Settings
from agentbox.tasks.ledger import StoreLedger
from agentbox.tasks.notes import NoteStore
from agentbox.tasks.store import Store
from agentbox.vocabulary import TaskSpec


@dataclass
class Rig:
    settings: Settings
    pool: ProviderPool
    budget: Budget
    runner: ProviderRunner
    ledger: StoreLedger

    async def run(self, spec: dict[str, Any], background: bool = False) -> Outcome:
        task = TaskSpec.model_validate(spec).with_id()
        decision = Router(self.settings, self.pool.available).decide(task, background)

        async def progress(_: dict[str, Any]) -> None:
            return None

        return await self.runner.run(task, decision.route.model_dump(), progress, background)


@pytest.fixture
async def rig_factory(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[tuple[Store, ProviderPool]] = []

    async def make(conf: dict[str, Any]) -> Rig:
        settings = Settings(**conf)
        store = Store(tmp_path / f"s{len(made)}.db")
        await store.open()
        pool = ProviderPool(settings, keys.KeyStore(tmp_path))
        ledger = StoreLedger(store)
        budget = Budget(settings.budget, ledger)
        await budget.load()
        runner = ProviderRunner(
            pool.providers,
            pool.breakers,
            budget,
            lambda: PriceTable(settings.prices, settings.providers),
            lambda: settings,
            http=pool.tool_http,
            notes=NoteStore(store),
        )
        made.append((store, pool))
        return Rig(settings, pool, budget, runner, ledger)

    yield make
    for store, pool in made:
        await pool.close()
        await store.close()
