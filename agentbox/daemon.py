"""`agentbox run`: builds the components, starts them in order, stops them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import uvloop

from agentbox import STARTED, __version__, config, keys, logs, reports
from agentbox.config import EX_CONFIG, ConfigError, Loaded
from agentbox.console_ops import ConsoleOps
from agentbox.control import ControlServer
from agentbox.control_client import ControlError, socket_path
from agentbox.health import Health
from agentbox.mqtt.bridge import Bridge
from agentbox.notify import Notifier, watchdog_loop
from agentbox.operations import Table, daemon_ops
from agentbox.providers.prices import PriceTable
from agentbox.routing.ops import routing_ops
from agentbox.runtime import build_runtime
from agentbox.tasks.ops import task_ops
from agentbox.tasks.spec import parse_spec
from agentbox.tasks.writer import StoreError
from agentbox.update.ops import update_ops
from agentbox.update.remote import RemoteUpdates

log = logging.getLogger("agentbox.daemon")
STATUS_EVERY_S = 5.0
PRUNE_EVERY_S = 600.0


class StateDirError(Exception):
    """The state directory cannot be used; one line saying how to fix it."""


def prepare_state_dir(path: Path) -> None:
    """Create the state dir owner-only, or explain why it cannot be used."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateDirError(
            f"cannot create the state directory {path}: {exc.strerror}"
            " (set AGENTBOX_STATE_DIR to a writable directory)"
        ) from None
    if not path.is_dir():
        raise StateDirError(f"state directory {path} is not a directory")
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise StateDirError(
            f"state directory {path} is not writable by uid {os.geteuid()}"
            " (fix its owner, or set AGENTBOX_STATE_DIR)"
        )
    if path.stat().st_uid == os.geteuid():
        # Owner-only, but a group search bit (a box's 0710, for the console) is kept.
        path.chmod(0o700 | (path.stat().st_mode & 0o010))


class Daemon:
    """One process: store, scheduler, providers, control socket, systemd notifications."""

    def __init__(self, loaded: Loaded, config_arg: str | None = None) -> None:
        self.config_arg = config_arg
        self.notifier = Notifier()
        self.started = time.monotonic()
        self.rt = build_runtime(loaded)
        self.ops = self._ops()
        self.bridge: Bridge | None = None
        self._bridge_task: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._mqtt_key: str | None = None  # read once the state dir is known to be usable
        if loaded.settings.mqtt.enabled:
            self.bridge = self._make_bridge()
        self.control = ControlServer(socket_path(loaded.state_dir), self.rt.service, self.ops)
        self._stop = asyncio.Event()
        self._last_status = ""

    @property
    def loaded(self) -> Loaded:
        return self.rt.live.loaded

    def _ops(self) -> Table:
        """The one table of operations, for the control socket and the MQTT bridge."""
        rt = self.rt
        console = ConsoleOps(
            live=rt.live,
            keystore=rt.keystore,
            providers=rt.pool.status,
            link=lambda: (
                (self.bridge.connected, self.bridge.last_error) if self.bridge else (False, "")
            ),
            reload=self.reload,
            config_arg=self.config_arg,
        )
        return Table(
            daemon_ops(self.status, self.reload),
            task_ops(rt.service),
            rt.planner.ops(),
            rt.notes.ops(),
            routing_ops(lambda: rt.live.router, rt.learning, parse_spec),
            console.ops(),
            update_ops(self._remote_updates),
        )

    def _make_bridge(self) -> Bridge:
        return Bridge(
            self.loaded.settings.mqtt,
            device_id=self.loaded.device_id,
            service=self.rt.service,
            store=self.rt.store,
            hub=self.rt.hub,
            keystore=self.rt.keystore,
            info=self.info,
            health=Health(self.loaded.state_dir, self._health_counters),
            ops=self.ops,
            updates=self._remote_updates(),
        )

    def _remote_updates(self) -> RemoteUpdates:
        conf = self.loaded.settings.update
        return RemoteUpdates(
            self.loaded.state_dir,
            Path(conf.root),
            __version__,
            window_s=conf.ready_timeout_s + conf.probation_s,
        )

    def _start_bridge(self) -> None:
        if self.bridge is not None and self._tg is not None:
            self._bridge_task = self._tg.create_task(self.bridge.run(), name="mqtt")

    def _broker_password(self) -> str | None:
        """Kept only to notice a changed password at reload (it is never logged)."""
        with contextlib.suppress(keys.KeyStoreError):
            return keys.resolve(self.rt.keystore, keys.BROKER_KEY)[0]
        return None

    async def _apply_mqtt(self) -> None:
        """Broker settings or password changed: reconnect, start or stop the bridge."""
        conf = self.loaded.settings.mqtt
        if conf.enabled and self.bridge is not None:
            log.info("mqtt settings changed: reconnecting to %s:%d", conf.host, conf.port)
            self.bridge.reconfigure(conf)
        elif conf.enabled:
            log.info("mqtt enabled: connecting to %s:%d", conf.host, conf.port)
            self.bridge = self._make_bridge()
            self._start_bridge()
        elif self.bridge is not None:
            log.info("mqtt disabled: publishing stopped and disconnecting")
            await self._stop_bridge()
            self.bridge = None

    async def _stop_bridge(self) -> None:
        """Results of drained work go out, then `stopped`, then disconnect."""
        if self.bridge is None:
            return
        await self.bridge.stop()
        task, self._bridge_task = self._bridge_task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), 10)
            except TimeoutError:
                task.cancel()

    # ---- status ----------------------------------------------------------------------

    def _sources(self) -> reports.Sources:
        """The parts the reports read, as they are now (a reload swaps some)."""
        rt = self.rt
        return reports.Sources(
            live=rt.live,
            started=self.started,
            store=rt.store,
            service=rt.service,
            scheduler=rt.scheduler,
            local=rt.pool.local,
            pool=rt.pool,
            budget=rt.budget,
            board=rt.scores.board,
            planner=rt.planner,
            learning=rt.learning,
            bridge=self.bridge,
        )

    async def status(self) -> dict[str, Any]:
        return await reports.status(self._sources())

    def info(self) -> dict[str, Any]:
        """The retained `info` message: what this box is and can do (never a key)."""
        return reports.info(self._sources())

    async def _health_counters(self) -> dict[str, Any]:
        """The daemon's own part of a health report."""
        return await reports.health_counters(self._sources())

    async def _status_line(self) -> str:
        counts = await self.rt.store.counts()
        queued = sum(c.get("queued", 0) for c in counts.values())
        running = sum(c.get("running", 0) for c in counts.values())
        model = "loaded" if self.rt.pool.local.loaded else "not loaded"
        return f"ready: {queued} queued, {running} running; local model {model}"

    # ---- reload ----------------------------------------------------------------------

    def _refresh_secrets(self) -> None:
        """Every key the daemon may hold, so the log scrubber can mask it."""
        values = self.rt.pool.secrets()
        for name in {keys.BROKER_KEY, *self.rt.keystore.names()}:
            with contextlib.suppress(keys.KeyStoreError):
                value, _ = keys.resolve(self.rt.keystore, name)
                if value:
                    values.add(value)
        logs.SCRUBBER.set_secrets(values)

    async def reload(self) -> str:
        """SIGHUP: re-read config and keys; running and queued tasks are untouched."""
        self.notifier.reloading()
        try:
            new = config.load(self.config_arg)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.notifier.ready(await self._status_line())
            return f"refused: {exc}"
        old = self.loaded.settings
        if new.state_dir != self.loaded.state_dir:
            log.warning(
                "state directory changes need a restart; still using %s", self.loaded.state_dir
            )
            new = new.model_copy(update={"state_dir": self.loaded.state_dir})
        warn_config(new)
        self.rt.apply(new)
        settings = new.settings
        mqtt_key = self._broker_password()
        if settings.mqtt != old.mqtt or mqtt_key != self._mqtt_key:
            self._mqtt_key = mqtt_key
            await self._apply_mqtt()
        self._refresh_secrets()
        if self.bridge is not None:
            self.bridge.load_secret()
        log.info("reloaded configuration%s and keys", f" from {new.path}" if new.path else "")
        self.notifier.ready(await self._status_line())
        return "reloaded"

    # ---- background duties -----------------------------------------------------------

    async def _healthy(self) -> None:
        """What a watchdog ping vouches for: the store's thread answers and MQTT intake moves."""
        await self.rt.store.ping()
        if self.bridge is not None:
            self.bridge.check_intake()

    async def _housekeeping(self) -> None:
        """STATUS= updates, and pruning of old finished tasks so a small disk never fills."""
        next_prune = 0.0
        while True:
            try:
                line = await self._status_line()
                if line != self._last_status:
                    self._last_status = line
                    self.notifier.status(line)
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                    t = self.loaded.settings.tasks
                    n = await self.rt.store.prune(
                        time.time(), t.retention_hours * 3600, t.max_finished
                    )
                    if n:
                        log.info("pruned %d finished task(s)", n)
                await self.rt.scores.flush()
            except StoreError as exc:
                log.error("housekeeping: %s", exc)
            await asyncio.sleep(STATUS_EVERY_S)

    # ---- lifecycle -------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        reloads: set[asyncio.Task[str]] = set()

        def on_hup() -> None:
            task = loop.create_task(self.reload(), name="reload")
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        # Owner-only files whoever starts us; systemd's UMask=0077 says the same.
        os.umask(0o077)
        settings = self.loaded.settings
        log.info(
            "agentbox %s starting: device %s, state %s, config %s",
            __version__,
            self.loaded.device_id,
            self.loaded.state_dir,
            self.loaded.path or "(defaults)",
        )
        prepare_state_dir(self.loaded.state_dir)
        self._mqtt_key = self._broker_password()
        self._refresh_secrets()
        report = await self.rt.open()
        if report.schema_from != report.schema_to:
            log.info("store schema migrated from v%d to v%d", report.schema_from, report.schema_to)
        if report.requeued or report.ended:
            log.warning(
                "recovered after an unclean stop: %d task(s) requeued, %d ended",
                report.requeued,
                report.ended,
            )
        try:
            await self.control.start()
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self.rt.scheduler.start(tg)
                duties = [
                    tg.create_task(watchdog_loop(self.notifier, self._healthy), name="watchdog"),
                    tg.create_task(self._housekeeping(), name="housekeeping"),
                    tg.create_task(self.rt.planner.run(), name="schedules"),
                ]
                self._start_bridge()
                ready_s = time.monotonic() - STARTED
                line = await self._status_line()
                self.notifier.ready(line)
                log.info(
                    "ready in %.2f s (%s); control socket %s", ready_s, line, self.control.path
                )
                await self._stop.wait()

                self.notifier.stopping()
                log.info("stopping: intake closed, draining running tasks")
                self.rt.service.accepting = False
                await self.control.close()
                if self.bridge is not None:
                    self.bridge.close_intake()
                await self.rt.scheduler.stop(settings.tasks.stop_timeout_s)
                await self._stop_bridge()
                for duty in duties:
                    duty.cancel()
        finally:
            await self.control.close()
            await self.rt.close()
        log.info("stopped cleanly")
        return 0


def warn_config(loaded: config.Loaded) -> None:
    """Say loudly what the configuration fell back on (also kept for `status`)."""
    settings = loaded.settings
    for warning in [*loaded.warnings, *PriceTable(settings.prices, settings.providers).warnings()]:
        log.error("configuration: %s", warning)


def main(config_arg: str | None = None) -> int:
    """Entry of `agentbox run`: exit 0 on a clean stop, 78 on configuration or state problems."""
    logs.setup()
    try:
        loaded = config.load(config_arg)
    except ConfigError as exc:
        log.error("bad configuration: %s", exc)
        return EX_CONFIG
    warn_config(loaded)
    daemon = Daemon(loaded, config_arg)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(daemon.run())
    except (StateDirError, StoreError) as exc:
        log.error("cannot start: %s", exc)
        return EX_CONFIG
    except ControlError as exc:
        log.error("cannot start: %s", exc.message)
        return 1
