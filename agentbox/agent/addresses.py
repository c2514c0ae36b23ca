"""Where the fetch tool may connect: public addresses only, unless the owner allows a network.

A host name on agent.fetch_allow says nothing about where it points: a name can resolve to the
box itself, the router or a cloud metadata service. So each fetch resolves the name once,
checks every address, and connects to the checked one (no second lookup to rebind).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class Refused(Exception):
    """An address or port the fetch tool may not reach; the message is for the model."""


def networks(cidrs: list[str]) -> list[Network]:
    """Parse `agent.fetch_allow_private` entries ("10.0.0.0/8", "127.0.0.1"); ValueError if bad."""
    return [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs]


def _embedded(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), judged as itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def why_not(ip: IPAddress) -> str | None:
    """What kind of non-public address `ip` is, or None for a public unicast one."""
    ip = _embedded(ip)
    for kind, hit in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("non-public", not ip.is_global),
    ):
        if hit:
            return kind
    return None


def check(ip: IPAddress, allow: list[Network]) -> None:
    """Raise Refused unless `ip` is public or inside a network the owner allowed."""
    kind = why_not(ip)
    if kind is None:
        return
    plain = _embedded(ip)
    if any(plain.version == n.version and plain in n for n in allow):
        return
    raise Refused(
        f"{ip} is a {kind} address; the box's owner allows such networks in"
        " agent.fetch_allow_private"
    )


async def resolve(host: str, port: int, allow: list[Network]) -> str:
    """The one address to connect to for `host`: every address it resolves to must pass."""
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except OSError as exc:
        raise Refused(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
    # All of them: a name that mixes public and private answers is refused outright.
    addresses = list(dict.fromkeys(ipaddress.ip_address(str(a[4][0]).split("%")[0]) for a in found))
    if not addresses:
        raise Refused(f"{host!r} resolves to no address")
    for ip in addresses:
        check(ip, allow)
    return str(addresses[0])
