"""Which network addresses a source may connect to, and a resolver that pins the checked ones.

An image proxy fetches URLs on behalf of clients, so a misconfigured or hostile origin (a DNS
name pointing inward, a redirect to ``169.254.169.254``) could make it reach services that only
the server's network can see. By default a source may connect only to public addresses: those
IANA lists as globally reachable, less multicast and reserved ranges. Loopback, private,
link-local, unique-local, cloud metadata and other special addresses are refused unless the
source's ``allowed_networks`` names them.

IPv6 addresses that embed an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, 6to4 ``2002::/16``,
NAT64 ``64:ff9b::/96`` and Teredo) are judged by the IPv4 address they lead to.

`PinnedResolver` makes the connection use exactly the addresses that were checked: the check
resolves the host once, pins the result, and aiohttp's connector queries the pinned resolver
instead of DNS. A DNS answer that changes between check and connect (DNS rebinding) therefore
cannot redirect the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final, TypeAlias

from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = (
    "IPAddress",
    "IPNetwork",
    "METADATA_ADDRESSES",
    "PinnedResolver",
    "Resolve",
    "blocked_reason",
    "embedded_ipv4",
    "ip_literal",
    "is_allowed",
    "parse_network",
    "system_resolve",
)

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
# An async function from host and port to the addresses the host resolves to.
Resolve: TypeAlias = Callable[[str, int], Awaitable[list[IPAddress]]]

# Instance metadata services of the big clouds: AWS, GCP, Azure and others on the IPv4
# link-local address, AWS Nitro also on a unique-local IPv6 address.
METADATA_ADDRESSES: Final = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_UNIQUE_LOCAL: Final = ipaddress.IPv6Network("fc00::/7")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
# Resolved addresses are numeric, so aiohttp's connector must not look them up again.
_NUMERIC_FLAGS: Final = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


def ip_literal(host: str) -> IPAddress | None:
    """Return `host` as an address when it is an IP literal (brackets allowed), else ``None``."""
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """Return the IPv4 address an IPv6 address leads to, if it embeds one."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def blocked_reason(address: IPAddress) -> str | None:
    """Say why `address` is not public, or return ``None`` when it is.

    Returns:
        A short description such as ``"loopback"`` or ``"cloud metadata"``, for log lines.
    """
    inner = embedded_ipv4(address)
    if inner is not None:
        reason = blocked_reason(inner)
        return None if reason is None else f"{reason} (embedded in {address})"

    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link-local"
    if address in _UNIQUE_LOCAL:
        return "unique-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    # is_global alone accepts some reserved ranges, such as the deprecated IPv4-compatible
    # IPv6 block ::/96, so reserved addresses are refused explicitly.
    if address.is_reserved or not address.is_global:
        return "reserved"
    return None


def is_allowed(address: IPAddress, allowed_networks: Sequence[IPNetwork]) -> bool:
    """Tell whether a source may connect to `address`.

    Public addresses are always allowed. Any other address is allowed only inside one of
    `allowed_networks`; an address embedding IPv4 may match by either form.
    """
    if blocked_reason(address) is None:
        return True
    candidates: list[IPAddress] = [address]
    inner = embedded_ipv4(address)
    if inner is not None:
        candidates.append(inner)
    return any(
        candidate in network
        for candidate in candidates
        for network in allowed_networks
        if candidate.version == network.version
    )


def parse_network(text: str) -> IPNetwork:
    """Parse a network in CIDR form (``10.0.0.0/8``, ``fd00::/8``) or a single address.

    Raises:
        ValueError: with a message for the configuration error.
    """
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(
            f"expected a network such as 10.0.0.0/8 or an address, got {text!r}: {exc}"
        ) from exc


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """Resolve `host` with the event loop's ``getaddrinfo``, which runs in a worker thread.

    Raises:
        OSError: the name does not resolve (`socket.gaierror`).
    """
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    addresses: list[IPAddress] = []
    for _, _, _, _, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class PinnedResolver(AbstractResolver):
    """An aiohttp resolver that returns only addresses pinned after a successful check.

    A host that was never pinned fails to resolve, so a connection can only go to an address
    that passed the check.
    """

    def __init__(self) -> None:
        self._pinned: dict[tuple[str, int], tuple[IPAddress, ...]] = {}

    def pin(self, host: str, port: int, addresses: Iterable[IPAddress]) -> None:
        """Set the addresses `resolve` returns for `host` and `port`, replacing earlier ones."""
        self._pinned[host, port] = tuple(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Return the pinned addresses of `host`, of `family` unless it is ``AF_UNSPEC``.

        Raises:
            OSError: no address of `family` is pinned for `host` and `port`.
        """
        results: list[ResolveResult] = []
        addresses = self._pinned.get((host, port), ())
        for address in addresses:
            address_family = socket.AF_INET if address.version == 4 else socket.AF_INET6
            if family not in (socket.AF_UNSPEC, address_family):
                continue
            results.append(
                {
                    "hostname": host,
                    "host": str(address),
                    "port": port,
                    "family": address_family,
                    "proto": socket.IPPROTO_TCP,
                    "flags": _NUMERIC_FLAGS,
                }
            )
        if not results:
            raise OSError(f"{host}:{port} has no checked address to connect to")
        return results

    async def close(self) -> None:
        """Forget every pinned address."""
        self._pinned.clear()
