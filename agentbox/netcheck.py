"""Is the internet reachable from this box? One DNS lookup and one TCP connect, with a hint."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any
from urllib.parse import urlsplit

from agentbox.providers.registry import KINDS
from agentbox.settings import Settings

DEFAULT_TARGET = "api.openai.com:443"
TIMEOUT_S = 4.0


def target(settings: Settings) -> str:
    """What to probe: the configured check, else the first cloud provider's host, else OpenAI."""
    if settings.device.reach_check:
        return settings.device.reach_check
    for conf in settings.providers.values():
        url = urlsplit(conf.base_url or KINDS[conf.kind].default_base)
        if url.hostname:
            port = url.port or (443 if url.scheme == "https" else 80)
            return f"{url.hostname}:{port}"
    return DEFAULT_TARGET


def _split(where: str) -> tuple[str, int]:
    host, _, port = where.rpartition(":")
    return host.strip("[]"), int(port)


async def check(where: str, nets: list[dict[str, Any]] | None) -> dict[str, Any]:
    """{"ok", "target", "message", "hint"}: what failed first (no address, DNS, connect).

    `nets` are the box's interfaces (health.addresses), None when they could not be read.
    """
    host, port = _split(where)
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), TIMEOUT_S
        )
    except (OSError, TimeoutError) as exc:
        if nets == []:
            return _fail(where, "no network address", "plug in a network cable or set up Wi-Fi")
        reason = "timed out" if isinstance(exc, TimeoutError) else "failed"
        return _fail(
            where,
            f"name lookup of {host} {reason}",
            "no working DNS: check the router (DHCP) or its DNS server",
        )
    addr = infos[0][4]
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host=str(addr[0]), port=port),
            TIMEOUT_S,
        )
    except (OSError, TimeoutError) as exc:
        if isinstance(exc, ConnectionRefusedError):
            why, hint = "refused", "something refuses HTTPS on the way: a firewall or proxy?"
        elif isinstance(exc, TimeoutError):
            why, hint = "timed out", "outgoing HTTPS seems blocked: check the firewall or proxy"
        else:
            why, hint = exc.strerror or str(exc), "check the network cable, router and proxy"
        return _fail(where, f"cannot connect to {where}: {why}", hint)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return {"ok": True, "target": where, "message": f"reached {where}", "hint": ""}


def _fail(where: str, message: str, hint: str) -> dict[str, Any]:
    return {"ok": False, "target": where, "message": message, "hint": hint}
