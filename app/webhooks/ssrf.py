"""The address guard: webhooks are sent to public addresses only (no SSRF into our own network).

A URL names a host; what matters is the address we connect to. So the guard runs twice:
- at registration (`check_url`), to refuse a bad URL with a 422 the client can read;
- on every connection the sender makes (`GuardedTransport`), after DNS resolution, to the very address it
  connects to. That catches a name whose DNS answer changed since registration (DNS rebinding) and every
  redirect target, whatever the URL looked like.
Refused: loopback, private, link-local, multicast, unspecified and every other non-global address (IPv4
mapped into IPv6 is judged as IPv4), unless inside one of Settings.webhook_allowed_networks.
"""

from __future__ import annotations

import ipaddress
import socket
import typing
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeUrl(Exception):
    """The URL is not one webhooks may be sent to; the message says why."""


def address_problem(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """None if webhooks may connect to `address`, else what kind of address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address.version == network.version and address in network for network in allowed):
        return None
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "the unspecified address (it reaches this host)"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if address.is_multicast:
        return "a multicast address"
    if not address.is_global:
        return "not a public address"
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal is itself); UnsafeUrl if it resolves to none."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:  # gaierror; IDNA refusing a label; a NUL in the name
        raise UnsafeUrl(f"the host {host!r} could not be resolved ({exc})") from None
    # A link-local IPv6 answer carries its zone ("fe80::1%eth0"), which is no part of the address.
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))


def check_host(host: str, port: int, allowed: Sequence[IPNetwork] = ()) -> list[IPAddress]:
    """The addresses of `host`, if every one of them is allowed; else UnsafeUrl naming the first that is not.

    Every one, not just the first: a name that resolves to a public and a private address would otherwise
    reach the private one whenever the resolver reorders its answers."""
    addresses = resolve(host, port)
    for address in addresses:
        problem = address_problem(address, allowed)
        if problem is not None:
            shown = host if host.strip("[]") == str(address) else f"{host} ({address})"
            raise UnsafeUrl(
                f"{shown} is {problem}; webhooks are only sent to public addresses "
                "(an operator may allow a network with DISTILLERY_WEBHOOK_ALLOWED_NETWORKS)"
            )
    return addresses


def check_url(url: str, allowed: Sequence[IPNetwork] = ()) -> None:
    """An http(s) URL whose host resolves to allowed addresses only; else UnsafeUrl."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl(f"the URL must be http or https, not {parts.scheme or 'schemeless'!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeUrl(f"the URL's port is invalid ({exc})") from None
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    check_host(parts.hostname, port, allowed)


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's network backend, connecting only to addresses the guard allows.

    It resolves the host itself, checks every address, then connects to a checked address, never to the
    name: a second lookup by the socket could return another answer. TLS still verifies the certificate
    against the host name (httpcore passes it to start_tls as server_hostname)."""

    def __init__(self, allowed: Sequence[IPNetwork]) -> None:
        self.allowed = tuple(allowed)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = check_host(host, port, self.allowed)
        except UnsafeUrl as exc:
            raise httpcore.ConnectError(f"refused: {exc}") from None
        error: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return super().connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None  # resolve() returns at least one address
        raise error


class GuardedTransport(httpx.HTTPTransport):
    """httpx's own transport, with the guarded backend under its connection pool.

    No proxies (a proxy would be what the guard checks, not the target) and no environment (HTTP_PROXY)."""

    def __init__(self, *, allowed: Sequence[IPNetwork], verify: bool = True) -> None:
        super().__init__(verify=verify, trust_env=False)
        # httpx does not take a network backend, so the pool it built is replaced by an equal one with ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=10,
            max_keepalive_connections=0,  # webhooks go to many hosts, seldom twice in a row
            network_backend=GuardedBackend(allowed),
        )
