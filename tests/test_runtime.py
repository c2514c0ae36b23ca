"""The task side as the daemon wires it (runtime.py): a reload reaches every part that reads
the configuration, and nothing keeps the old one."""

from __future__ import annotations

from pathlib import Path

from agentbox.config import Loaded
from agentbox.routing.router import CLOUD
from agentbox.runtime import build_runtime
from agentbox.settings import Settings


def loaded(state: Path, **conf: object) -> Loaded:
    return Loaded(settings=Settings.model_validate(conf), path=None, state_dir=state, device_id="t")


async def test_a_reload_reaches_every_part(tmp_path: Path) -> None:
    rt = build_runtime(loaded(tmp_path))
    await rt.open()
    try:
        old_router = rt.live.router
        new = loaded(
            tmp_path,
            budget={"daily_usd": 0.25, "monthly_usd": 3.0},
            tasks={"cloud_concurrency": 7, "retry_base_s": 0.5, "max_attempts": 9},
            mqtt={"max_payload_bytes": 4096, "enabled": False},
            prices={"zz-model": {"input": 1.0, "output": 2.0}},
        )
        rt.apply(new)
        assert rt.live.loaded is new
        assert rt.live.router is not old_router and rt.live.router.settings is new.settings
        assert rt.runner.live.settings is new.settings  # the runner reads the same holder
        assert rt.budget.conf.daily_usd == 0.25
        assert rt.scheduler.lanes[CLOUD].capacity == 7
        assert rt.scheduler.retry_base_s == 0.5
        assert rt.service.max_payload_bytes == 4096
        assert rt.service.live.settings.tasks.max_attempts == 9
        assert rt.live.prices.lookup("zz-model-1")[1]  # known only from the new config
        assert rt.store.outbox_enabled is False
    finally:
        await rt.close()


async def test_the_router_sees_the_budget_and_the_box_learning(tmp_path: Path) -> None:
    """The daemon's router, not a plain one: it knows when the caps are reached."""
    rt = build_runtime(loaded(tmp_path, budget={"daily_usd": 0.0}))
    await rt.open()
    try:
        assert rt.live.router.spendable() == rt.budget.exhausted() != ""
        assert rt.live.router.learning is rt.learning
    finally:
        await rt.close()
