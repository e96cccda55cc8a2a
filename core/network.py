"""Which addresses only this machine reaches: the one rule the gateway and the console bind by."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str | None) -> bool:
    """True for an address only this machine reaches. A wildcard, a network address or a host name other than
    ``localhost`` is not: a name may resolve to anything, so it is taken as reachable from the network."""
    if not host:
        return False
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def client_host(host: str) -> str:
    """Where a client connects to a server bound to ``host``: a wildcard bind address is reached through loopback."""
    return "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host
