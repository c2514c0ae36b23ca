"""The task side of a box wired once: store, providers, budget, router, runner, scheduler,
schedules. `agentbox run` (daemon.py) and the tests build it the same way."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from agentbox.config import Loaded
from agentbox.keys import KeyStore
from agentbox.live import Live
from agentbox.routing.budget import Budget
from agentbox.routing.learned import BoxLearning
from agentbox.routing.model import shipped
from agentbox.routing.pool import ProviderPool
from agentbox.routing.router import CLOUD, LOCAL, Router
from agentbox.routing.runner import ProviderRunner
from agentbox.routing.scoreboard import Scoreboard
from agentbox.settings import Settings
from agentbox.tasks.hub import Hub
from agentbox.tasks.ledger import StoreLedger
from agentbox.tasks.migrations import DB_NAME
from agentbox.tasks.notes import NoteStore
from agentbox.tasks.planner import Planner
from agentbox.tasks.rows import OpenReport
from agentbox.tasks.scheduler import Scheduler
from agentbox.tasks.schedules import ScheduleStore
from agentbox.tasks.scores import StoreScores
from agentbox.tasks.service import TaskService
from agentbox.tasks.store import Store
from agentbox.tasks.writer import StoreError


def lanes(settings: Settings) -> dict[str, int]:
    """How many tasks each lane runs at once: one local model, the cloud as configured."""
    return {LOCAL: 1, CLOUD: settings.tasks.cloud_concurrency}


@dataclass
class Runtime:
    """The parts, each built once; `live` holds what a reload swaps."""

    live: Live
    keystore: KeyStore
    hub: Hub  # task events: the store and the scheduler feed it, waiters and MQTT listen
    store: Store
    pool: ProviderPool
    budget: Budget
    learning: BoxLearning
    notes: NoteStore
    scores: StoreScores
    runner: ProviderRunner
    service: TaskService
    scheduler: Scheduler
    planner: Planner

    async def open(self) -> OpenReport:
        """Open the store (migrating and recovering it) and load what the parts keep in it."""
        report = await self.store.open()
        await self.budget.load()
        await self.learning.load()
        await self.scores.load()
        return report

    def apply(self, loaded: Loaded) -> None:
        """A reload: providers, caps, router, prices and lane widths; no task is touched."""
        settings = loaded.settings
        self.pool.configure(settings)
        self.budget.configure(settings.budget)
        self.live.swap(loaded)
        self.scheduler.configure(lanes(settings), settings.tasks.retry_base_s)
        self.store.outbox_enabled = settings.mqtt.enabled

    async def close(self) -> None:
        """Connections closed and what the parts keep written, then the store closed."""
        await self.pool.close()
        await self.learning.flush()
        with contextlib.suppress(StoreError):
            await self.scores.flush()  # the figures outlive a restart
        await self.store.close()


def build_runtime(loaded: Loaded, keystore: KeyStore | None = None) -> Runtime:
    """Every part of the task side, wired; nothing is opened or started yet."""
    settings = loaded.settings
    keystore = keystore if keystore is not None else KeyStore(loaded.state_dir)
    hub = Hub()
    store = Store(loaded.state_dir / DB_NAME, outbox=settings.mqtt.enabled, hub=hub)
    pool = ProviderPool(settings, keystore)
    budget = Budget(settings.budget, StoreLedger(store))
    learning = BoxLearning(shipped(), store)
    live = Live(loaded, lambda s: Router(s, pool.available, budget.exhausted, learning))
    notes = NoteStore(store)
    scores = StoreScores(store, Scoreboard())
    runner = ProviderRunner(
        pool.providers,
        pool.breakers,
        budget,
        live,
        http=pool.tool_http,
        notes=notes,
        escalated=lambda spec: live.router.learn(spec, True, "escalated"),
        scoreboard=scores.board,
    )
    service = TaskService(store, live, hub=hub)
    scheduler = Scheduler(store, runner, lanes(settings), settings.tasks.retry_base_s, hub)
    service.attach(scheduler)
    planner = Planner(ScheduleStore(store), service)
    return Runtime(
        live, keystore, hub, store, pool, budget, learning, notes, scores, runner, service,
        scheduler, planner,
    )  # fmt: skip
