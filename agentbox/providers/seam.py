"""The one method the providers call an HTTP transport through, and plain httpx behind it.

Like httpx's `AsyncBaseTransport.handle_async_request`: a call goes in, an open response comes
out, and the caller closes it. Our own transport (providers/transport.py) and httpx (for the
key tests, and as a stand-in for ours in tests) both answer it, with httpx's error model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, Protocol

import httpx

from agentbox.providers.proxies import Proxies


class Call(NamedTuple):
    """One request; `timeouts` None means the transport's own."""

    method: str
    url: str
    headers: Mapping[str, str]
    content: bytes = b""
    timeouts: httpx.Timeout | None = None


class Reply(Protocol):
    """An open response (httpx.Response is one): its body still to be read, then closed."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> httpx.Headers: ...

    @property
    def content(self) -> bytes: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None: ...


class Transport(Protocol):
    async def handle_async_request(self, call: Call) -> Reply:
        """Send `call`; the response once its head has arrived. Raises httpx.HTTPError."""
        ...

    async def aclose(self) -> None: ...


@asynccontextmanager
async def stream(
    transport: Transport,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    content: bytes = b"",
    timeouts: httpx.Timeout | None = None,
) -> AsyncIterator[Reply]:
    """The open response, closed on leaving (a connection goes back to its pool only when
    the body was read to its end)."""
    call = Call(method, url, headers or {}, content, timeouts)
    reply = await transport.handle_async_request(call)
    try:
        yield reply
    finally:
        await reply.aclose()


class HttpxTransport:
    """Plain httpx behind the seam, with the same proxy choice as ours: one AsyncClient per
    proxy in use (most often one), none of httpx's own reading of the environment."""

    def __init__(
        self,
        timeouts: httpx.Timeout,
        proxies: Proxies | None = None,
        verify: Any = True,
    ) -> None:
        self._timeouts = timeouts
        self._proxies = proxies or Proxies.from_env()
        self._verify = verify
        self._clients: dict[str | None, httpx.AsyncClient] = {}

    def _client(self, url: str) -> httpx.AsyncClient:
        proxy = self._proxies.pick(url)
        key = proxy.url if proxy else None
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(
                timeout=self._timeouts,
                verify=self._verify,
                trust_env=False,
                proxy=httpx.Proxy(proxy.url) if proxy else None,
                headers={"user-agent": "agentbox"},
            )
            self._clients[key] = client
        return client

    async def handle_async_request(self, call: Call) -> Reply:
        client = self._client(call.url)
        req = client.build_request(
            call.method,
            call.url,
            headers=call.headers,
            content=call.content or None,
            timeout=call.timeouts or self._timeouts,
        )
        return await client.send(req, stream=True)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
