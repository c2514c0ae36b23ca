"""Which HTTP proxy a provider's URL goes through, read from the environment as curl reads it.

`https_proxy`/`HTTPS_PROXY` for https URLs (a CONNECT tunnel), `http_proxy`/`HTTP_PROXY` for
http ones (absolute-form requests), the lowercase name first. `no_proxy`/`NO_PROXY` lists
hosts to reach directly: `*` (all), a host or domain (its subdomains too, a leading dot
allowed), an IP address or network, each optionally with `:port`. Loopback (localhost, 127/8,
::1) is always reached directly, as Go's net/http does: a local server is never behind the
office's proxy. A proxy URL's user and
password go out only as a Proxy-Authorization header: nothing here ever prints them.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import httpx

PROXY_DEFAULT_PORT = 1080  # curl's, for a proxy URL that names none


class ProxyError(ValueError):
    """A proxy setting that cannot be used; the message names the variable, never its value."""


@dataclass(frozen=True)
class Proxy:
    """One proxy: where to connect, and the header that carries its credentials."""

    host: str
    port: int
    auth: bytes | None = field(default=None, repr=False)  # the Proxy-Authorization value
    url: str = field(default="", repr=False)  # as given, credentials included: for httpx

    @property
    def shown(self) -> str:
        """How logs and errors name it: host and port only."""
        return f"{self.host}:{self.port}"


def parse_proxy(value: str, name: str) -> Proxy:
    """A proxy URL such as http://user:pass@proxy.office:3128 (scheme optional)."""
    text = value.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ProxyError(f"{name} is not a proxy URL like http://proxy.example:3128") from None
    if parts.scheme.lower() != "http":
        raise ProxyError(
            f"{name}: only an http:// proxy (HTTP CONNECT) is supported, not {parts.scheme}://"
        )
    if not parts.hostname:
        raise ProxyError(f"{name} names no host; write it like http://proxy.example:3128")
    auth = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = b"Basic " + base64.b64encode(pair.encode())
    return Proxy(parts.hostname, port or PROXY_DEFAULT_PORT, auth, text)


def _split_host_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [v6]:port
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    else:  # a bare IPv6 address, or no port
        host, port = entry, ""
    return host, int(port) if port.isdigit() else None


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Does `no_proxy` send host:port directly?"""
    host = host.lower().rstrip(".").strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        name, want_port = _split_host_port(entry)
        if want_port is not None and want_port != port:
            continue
        name = name.lstrip("*").lstrip(".").rstrip(".")
        if address is not None:
            try:
                if address in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if host == name or host.endswith("." + name):
            return True
    return False


def loopback(host: str) -> bool:
    host = host.lower().rstrip(".").strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _first(environ: Mapping[str, str], *names: str) -> tuple[str, str]:
    for name in names:
        if environ.get(name, "").strip():
            return name, environ[name]
    return "", ""


@dataclass(frozen=True)
class Proxies:
    """The proxies for http and https URLs, and the hosts that bypass them. A setting that
    cannot be used fails every call it would carry, saying why (never silently direct)."""

    https: Proxy | ProxyError | None = None
    http: Proxy | ProxyError | None = None
    no_proxy: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Proxies:
        env = os.environ if environ is None else environ
        found: dict[str, Proxy | ProxyError | None] = {}
        for scheme in ("https", "http"):
            name, value = _first(env, f"{scheme}_proxy", f"{scheme.upper()}_PROXY")
            try:
                found[scheme] = parse_proxy(value, name) if value else None
            except ProxyError as exc:
                found[scheme] = exc
        _, no_proxy = _first(env, "no_proxy", "NO_PROXY")
        return cls(found["https"], found["http"], no_proxy)

    @property
    def problems(self) -> list[str]:
        return [str(p) for p in (self.https, self.http) if isinstance(p, ProxyError)]

    def for_origin(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy for this origin, or None to connect directly; raises ProxyError."""
        proxy = self.https if scheme == "https" else self.http
        if proxy is None or loopback(host) or bypassed(host, port, self.no_proxy):
            return None
        if isinstance(proxy, ProxyError):
            raise ProxyError(str(proxy))
        return proxy

    def pick(self, url: str) -> Proxy | None:
        """The proxy for `url` (see for_origin)."""
        u = httpx.URL(url)
        return self.for_origin(u.scheme, u.host, u.port or (443 if u.scheme == "https" else 80))
