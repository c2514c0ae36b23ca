"""The daemon's own task side (runtime.build_runtime) without its transports, for routing and
agent tests that drive the provider runner directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentbox import keys
from agentbox.config import Loaded
from agentbox.routing.budget import Budget
from agentbox.routing.pool import ProviderPool
from agentbox.routing.runner import Outcome, ProviderRunner
from agentbox.runtime import Runtime, build_runtime
from agentbox.settings import Settings
from agentbox.tasks.ledger import StoreLedger
from agentbox.vocabulary import TaskSpec


@dataclass
class Rig:
    rt: Runtime

    @property
    def settings(self) -> Settings:
        return self.rt.live.settings

    @property
    def pool(self) -> ProviderPool:
        return self.rt.pool

    @property
    def budget(self) -> Budget:
        return self.rt.budget

    @property
    def runner(self) -> ProviderRunner:
        return self.rt.runner

    @property
    def ledger(self) -> StoreLedger:
        ledger = self.rt.budget.ledger
        assert isinstance(ledger, StoreLedger)
        return ledger

    async def run(self, spec: dict[str, Any], background: bool = False) -> Outcome:
        """Route `spec` as the daemon's router would and run it, without the scheduler."""
        task = TaskSpec.model_validate(spec).with_id()
        decision = self.rt.live.router.decide(task, background)

        async def progress(_: dict[str, Any]) -> None:
            return None

        return await self.runner.run(task, decision.route, progress, background)


@pytest.fixture
async def rig_factory(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Runtime] = []

    async def make(conf: dict[str, Any]) -> Rig:
        state = tmp_path / f"s{len(made)}"
        state.mkdir()
        loaded = Loaded(settings=Settings(**conf), path=None, state_dir=state, device_id="rig")
        rt = build_runtime(loaded, keys.KeyStore(tmp_path))
        await rt.open()
        made.append(rt)
        return Rig(rt)

    yield make
    for rt in made:
        await rt.close()
