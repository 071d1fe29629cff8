"""Shared DICOM network plumbing: node addresses, the calling-host allowlist, TCP_NODELAY.

Kept free of Django so that both the receiver and the sender (and their tests) can use it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from pynetdicom import AE
from pynetdicom.transport import AssociationSocket, ThreadedAssociationServer

from dicomflow.errors import InputError

AE_TITLE_MAX = 16


def check_ae_title(title: str, what: str = "AE title") -> str:
    """A valid AE title (1–16 printable ASCII characters, no backslash) or an InputError."""
    cleaned = title.strip()
    if not cleaned or len(cleaned) > AE_TITLE_MAX or not cleaned.isascii() or "\\" in cleaned:
        raise InputError(f"{what} must be 1 to {AE_TITLE_MAX} ASCII characters without a backslash")
    if any(not ch.isprintable() for ch in cleaned):
        raise InputError(f"{what} must not contain control characters")
    return cleaned


@dataclass(frozen=True)
class RemoteNode:
    """Where to send: the remote AE title, host and port, and the calling AE title we use."""

    ae_title: str
    host: str
    port: int
    our_ae_title: str = "DICOMFLOW"

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_node(text: str, our_ae_title: str = "DICOMFLOW") -> RemoteNode:
    """``AET@HOST:PORT`` (IPv6 hosts in brackets: ``AET@[::1]:104``) → RemoteNode."""
    aet, sep, rest = text.rpartition("@")
    if not sep or not aet:
        raise InputError("a DICOM node is written AET@HOST:PORT (e.g. ORTHANC@127.0.0.1:4242)")
    if rest.startswith("["):
        host, _, port_text = rest[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = rest.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        raise InputError("a DICOM node is written AET@HOST:PORT; the port must be a number") from None
    if not host or not 0 < port < 65536:
        raise InputError("a DICOM node is written AET@HOST:PORT with a host and a port from 1 to 65535")
    return RemoteNode(check_ae_title(aet, "remote AE title"), host, port, check_ae_title(our_ae_title))


# --- allowlist -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AllowRule:
    """One ``AET@HOST`` entry. ``*`` matches any AE title / any host; HOST may be an IP address,
    a network in CIDR notation (``10.1.0.0/16``) or a host name (resolved when the rule is made)."""

    ae_title: str  # "*" = any
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None  # None = any host
    text: str

    def matches(self, calling_aet: str, address: str) -> bool:
        if self.ae_title != "*" and calling_aet.strip() != self.ae_title:
            return False
        return self.matches_host(address)

    def matches_host(self, address: str) -> bool:
        if self.networks is None:
            return True
        ip = _ip(address)
        return ip is not None and any(ip.version == net.version and ip in net for net in self.networks)


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback(address: str) -> bool:
    ip = _ip(address)
    return ip is not None and ip.is_loopback


def parse_allow_rule(text: str) -> AllowRule:
    aet, sep, host = text.strip().rpartition("@")
    if not sep or not aet or not host:
        raise InputError(
            f"allowlist entry {text!r} must look like AET@HOST (AET or HOST may be '*'; HOST may be a CIDR network)"
        )
    if aet != "*":
        aet = check_ae_title(aet, "allowlist AE title")
    if host == "*":
        return AllowRule(aet, None, text.strip())
    host = host.strip("[]")
    try:
        networks = (ipaddress.ip_network(host, strict=False),)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except socket.gaierror:
            raise InputError(f"allowlist entry {text!r}: host name cannot be resolved") from None
        addresses = {_ip(str(info[4][0])) for info in infos}
        networks = tuple(ipaddress.ip_network(a) for a in addresses if a is not None)
    return AllowRule(aet, networks, text.strip())


class Allowlist:
    """Who may associate. Empty: loopback addresses only (any calling AE title)."""

    def __init__(self, entries: list[str] | tuple[str, ...] = ()):
        self.rules = [parse_allow_rule(e) for e in entries if e.strip()]

    def allows(self, calling_aet: str, address: str) -> bool:
        if not self.rules:
            return is_loopback(address)
        return any(rule.matches(calling_aet, address) for rule in self.rules)

    def allows_host(self, address: str) -> bool:
        """Whether any AE title may associate from ``address``: checked when the connection is
        accepted, before a byte is read (the AE title is checked once the request has arrived)."""
        if not self.rules:
            return is_loopback(address)
        return any(rule.matches_host(address) for rule in self.rules)

    def describe(self) -> str:
        return ", ".join(r.text for r in self.rules) if self.rules else "loopback addresses only"


# --- TCP_NODELAY ------------------------------------------------------------------------------------
def _nodelay(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass  # e.g. a Unix socket in a test; nothing to tune


class NoDelayAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with Nagle's algorithm off on every accepted connection:
    small PDUs (C-STORE responses) otherwise wait ~40 ms for the delayed ACK.

    ``fast_path(sock, address) -> bool``, when set, is offered each connection first (on its own
    thread); it returns False, having consumed nothing, to leave the connection to pynetdicom.
    """

    fast_path = None
    #: ``admit(sock, address) -> bool``, when set, is asked on the accepting thread before anything is
    #: read: False closes the connection at once (host not allowed, too many connections waiting).
    admit = None
    # shutdown() must not wait for connection threads: a fast-path association runs on its own
    # thread until it ends, and the receiver's stop() gives those a grace period, then aborts them.
    block_on_close = False
    daemon_threads = True
    # listen() backlog: socketserver's 5 makes a burst of connections (a flood, or many modalities at
    # once) wait out 1 s SYN retransmissions while the accepting thread catches up.
    request_queue_size = 128

    def verify_request(self, request, client_address):  # type: ignore[override]
        return self.admit is None or self.admit(request, client_address)

    def finish_request(self, request, client_address):  # type: ignore[override]
        if self.fast_path is not None and self.fast_path(request, client_address):
            return
        super().finish_request(request, client_address)

    def get_request(self):  # type: ignore[override]
        client, address = super().get_request()
        _nodelay(client)
        return client, address


class _NoDelaySocket(AssociationSocket):
    def _create_socket(self, address):  # type: ignore[override]
        sock = super()._create_socket(address)
        _nodelay(sock)
        return sock


class NoDelayAE(AE):
    """An AE whose outgoing associations use TCP_NODELAY sockets."""

    def _create_socket(self, assoc, address, tls_args):  # type: ignore[override]
        sock = _NoDelaySocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock
