"""The one table of operations: the control socket and the MQTT bridge call the same handlers,
and bad input (an unknown op, a field of the wrong type) gets the same error code on both."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentbox.control import ControlServer
from agentbox.control_client import ControlClient, ControlError
from agentbox.operations import BOTH, Caller, Table, fields_parser, typed_op
from agentbox.tasks.ops import ListRequest, TaskId, TaskReply, task_ops
from agentbox.tasks.service import TaskService
from agentbox.tasks.store import Store
from agentbox.vocabulary import ErrorCode, SpecError
from tests.bridges import bare_bridge, bare_service
from tests.mqtt_peer import Broker, Peer
from tests.test_mqtt_links import until

ROOT = Path(__file__).resolve().parent.parent
BASE = "agentbox/v1/box"


@dataclass
class Box:
    service: TaskService
    socket: Path
    peer: Peer
    gets: list[str]  # the task ids the one `get` handler was called with

    async def ask(self, op: str, **args: Any) -> dict[str, Any]:
        """One request on the control socket, as the CLI sends it."""

        def call() -> dict[str, Any]:
            with ControlClient(self.socket) as client:
                return client.call(op, **args)

        return await asyncio.to_thread(call)

    async def refused(self, op: str, **args: Any) -> ControlError:
        with pytest.raises(ControlError) as err:
            await self.ask(op, **args)
        return err.value

    async def mqtt(self, topic: str, payload: dict[str, Any], answer: str) -> dict[str, Any]:
        """One request on MQTT with a v5 Response Topic; its one answer."""
        self.peer.publish(f"{BASE}/{topic}", payload, response_topic=answer)
        await until(lambda: self.peer.on(answer))
        [(_, body, _, _)] = self.peer.on(answer)
        return dict(body)


@pytest.fixture
async def box(short_tmp: Path) -> AsyncIterator[Box]:
    """A task service whose table (task ops, its `get` counted, and no schedule ops) is
    served by a real control socket and a real bridge on a real Mosquitto."""
    broker = Broker(short_tmp).start()
    store = Store(short_tmp / "tasks.db")
    await store.open()
    service = bare_service(store)
    gets: list[str] = []

    async def counted_get(req: TaskId, caller: Caller) -> TaskReply:
        gets.append(req.id)
        return TaskReply(req.id, await service.get(req.id))

    ops = Table([o for o in task_ops(service) if o.name != "get"])
    ops.add(typed_op("get", TaskId, counted_get, BOTH))
    control = ControlServer(short_tmp / "control.sock", service, ops)
    await control.start()
    bridge = bare_bridge(store, broker.port, short_tmp, "box", service, ops=ops)
    running = asyncio.create_task(bridge.run())
    await until(lambda: bridge.connected)
    peer = Peer(broker.port)
    peer.subscribe("replies/#")
    try:
        yield Box(service, control.path, peer, gets)
    finally:
        peer.close()
        await bridge.stop()
        await asyncio.wait_for(running, 10)
        await control.close()
        await store.close()
        broker.stop()


async def test_one_registered_handler_serves_the_socket_and_mqtt(box: Box) -> None:
    await box.service.submit({"id": "t1", "prompt": "x"}, "local")
    by_socket = await box.ask("get", id="t1")
    by_mqtt = await box.mqtt("task/get", {"id": "t1"}, "replies/get")
    assert box.gets == ["t1", "t1"]
    assert by_socket["task"] == by_mqtt and by_mqtt["id"] == "t1" and by_mqtt["state"] == "queued"
    # Not found: each transport says so in its own form, from the same handler.
    missing = await box.refused("get", id="nope")
    assert missing.code == "not_found"
    assert (await box.mqtt("task/get", {"id": "nope"}, "replies/nope"))["state"] == "not_found"
    assert box.gets == ["t1", "t1", "nope", "nope"]


async def test_a_field_of_the_wrong_type_gets_the_same_code_on_both(box: Box) -> None:
    on_socket = await box.refused("get", id=5)
    on_mqtt = await box.mqtt("task/get", {"id": 5}, "replies/bad")
    assert on_socket.code == on_mqtt["error"]["code"] == "invalid_request"
    assert on_socket.message == on_mqtt["error"]["message"] == "'id' must be a string"
    assert on_mqtt["state"] == "rejected"
    assert box.gets == [], "a request refused at the table's edge reached the handler"
    wait = await box.refused("submit", spec={"prompt": "x"}, wait="yes")
    assert wait.code == "invalid_request" and "'wait' must be true or false" in wait.message
    assert await box.service.list_tasks(None, 10) == []


async def test_an_unknown_op_gets_the_same_code_on_both(box: Box) -> None:
    on_socket = await box.refused("schedule_list")  # this table has no schedule ops
    on_mqtt = await box.mqtt("schedule/list", {}, "replies/unknown")
    assert on_socket.code == on_mqtt["error"]["code"] == "invalid_request"
    assert on_socket.message == on_mqtt["error"]["message"] == "unknown op 'schedule_list'"
    assert (await box.refused("no_such_op")).code == "invalid_request"


async def test_the_table_parses_at_its_edge_and_registers_each_name_once() -> None:
    async def run(req: TaskId, _: Caller) -> dict[str, Any]:
        return {"id": req.id}

    table = Table([typed_op("get", TaskId, run)])  # the socket only, by default
    assert await table.call("get", {"id": "a", "other": 1}, Caller("socket")) == {"id": "a"}
    for data, why in (({}, "'id' must be a string"), ({"id": None}, "'id' must be a string")):
        with pytest.raises(SpecError) as err:
            table.request("get", data, "socket")
        assert err.value.code == ErrorCode.invalid_request and err.value.message == why
    lists = fields_parser(ListRequest)
    assert lists({"state": None, "limit": 3}) == ListRequest(None, 3)
    for bad, why in (({"limit": True}, "'limit' must be an integer"), ({"state": 1}, "string")):
        with pytest.raises(SpecError, match=why):
            lists(bad)
    with pytest.raises(SpecError, match="unknown op 'get'"):
        table.request("get", {"id": "a"}, "mqtt")  # MQTT reaches only what is opened to it
    with pytest.raises(ValueError, match="registered twice"):
        table.add(typed_op("get", TaskId, run, BOTH))
    assert table.names("socket") == ["get"] and table.names("mqtt") == []


def test_the_console_ops_load_without_the_daemon() -> None:
    probe = "import sys, agentbox.console_ops; print('agentbox.daemon' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    # Nor do they name it, even for type checking: the daemon wires them, not the other way.
    importers = []
    for path in sorted((ROOT / "agentbox").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" for a in node.names] + [str(node.module)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if "agentbox.daemon" in names:
                importers.append(str(path.relative_to(ROOT)))
    assert importers == ["agentbox/cli/system.py"]  # `agentbox run`
