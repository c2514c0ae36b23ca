"""A provider that echoes the key in its error bodies, at any offset: no part of the key
reaches a result, the store, the outbox (MQTT), the log, `status` or `keys test`."""

from __future__ import annotations

import json
import logging
import secrets
import sys
from typing import Any

from agentbox import logs
from agentbox.logs import Scrubber, mask
from tests.conftest import Daemon, free_port, outbox_mqtt
from tests.fakes import FakeProvider, error

KEY = "sk-leak-" + secrets.token_hex(20)
# Around 284-300: the old cut at 300 characters kept the key's first characters.
OFFSETS = (0, 100, 250, 270, 284, 288, 292, 296, 299, 300, 310)


def leaks(text: str, key: str = KEY) -> list[str]:
    """Every 8-character piece of the key found in `text`."""
    return sorted({key[i : i + 8] for i in range(len(key) - 7) if key[i : i + 8] in text})


def echo(offset: int, status: int = 400) -> Any:
    return error(status, {"error": {"message": "x" * offset + f"bad request with key {KEY} !"}})


def test_an_echoed_key_leaks_nowhere(daemons: Any, fake: FakeProvider) -> None:
    fake.push(*(echo(n) for n in OFFSETS))
    config = (
        f"{outbox_mqtt(free_port())}[providers.main]\nkind = 'openai'\n"
        f"model = 'gpt-4o-mini'\nbase_url = '{fake.url}/v1'\n"
    )
    d: Daemon = daemons(config)
    d.cli("keys", "set", "main", input=KEY)
    d.start()
    for n in OFFSETS:
        args = ("submit", "--id", f"echo{n}", "--tier", "cloud", "--wait", "--json", "hi")
        task = json.loads(d.cli(*args, check=False).stdout)
        assert task["state"] == "failed" and task["error"]["code"] == "provider_error", task
        assert "***" in task["error"]["message"] or n > 250, task
        assert leaks(json.dumps(task)) == [], (n, task["error"])
    assert [r["headers"]["authorization"] for r in fake.requests[:1]] == [f"Bearer {KEY}"]
    status = d.cli("status", "--json").stdout
    db = d.db()
    rows = [r[0] for r in db.execute("SELECT result FROM tasks")]
    outbox = [str(r[0]) for r in db.execute("SELECT payload FROM outbox")]
    assert len(rows) == len(OFFSETS) and outbox
    everything = {"status": status, "log": d.log(), "tasks": rows, "outbox": outbox}
    assert {where: leaks(str(text)) for where, text in everything.items()} == {
        where: [] for where in everything
    }
    # `keys test` runs outside the daemon's scrubber, on a 401 that echoes the key.
    fake.push(echo(284, 401))
    tested = d.cli("keys", "test", "main", check=False)
    assert tested.returncode != 0 and "key rejected" in tested.stdout + tested.stderr
    assert leaks(tested.stdout + tested.stderr) == []
    assert d.stop() == 0


def test_mask_hides_a_cut_keys_beginning() -> None:
    key = "sk-proj-0123456789abcdef"
    assert mask(f"error: {key} again", {key}) == "error: *** again"
    assert mask(f"cut here: {key[:10]}", {key}) == "cut here: ***"
    assert mask(f"cut here: {key[:5]}", {key}) == f"cut here: {key[:5]}"  # too short to matter
    assert mask("sk-proj- is how keys begin", {key}) == "sk-proj- is how keys begin"
    assert mask("x" * 290 + key, {key}, limit=300) == "x" * 290 + "***"


def test_log_tracebacks_are_scrubbed() -> None:
    key = "sk-trace-0123456789abcdef"
    scrubber = Scrubber()
    scrubber.set_secrets({key})
    try:
        raise RuntimeError(f"the server said {key}")
    except RuntimeError:
        info = sys.exc_info()
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed: %s", (key,), info)
    assert scrubber.filter(record)
    text = logs.OneLineFormatter(journald=False).format(record)
    assert "RuntimeError: the server said ***" in text and leaks(text, key) == []
