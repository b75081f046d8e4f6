"""Who may use the review console (and the sink's ``/console/rows`` it reads through).

Rule: bound to a loopback address, the console is open to the local user (as the worker's
``/metrics`` is); bound anywhere else it must have ``CONSOLE_TOKEN`` and refuses to start
without one. When a token is set, every request must carry it (``Authorization: Bearer``, or
the ``ja4_console`` cookie the page sets after ``/?token=...``), compared in constant time.
The token is never printed or logged.
"""

from __future__ import annotations

import hmac
import ipaddress

from ja4_core.errors import ConfigError

COOKIE = "ja4_console"


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` or ``localhost``.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0"), is_loopback("::1")
    (True, True, False, True)
    """
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, what: str = "CONSOLE_HOST") -> None:
    """Refuse (:class:`ConfigError`) to serve on a non-loopback address without a token."""
    if not token and not is_loopback(host):
        raise ConfigError(f"CONSOLE_TOKEN: required when {what} ({host}) is not a loopback address: "
                          "anyone who reaches the port could read scores and send labels")


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, else None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def token_ok(expected: str | None, presented: str | None) -> bool:
    """True when no token is required, or ``presented`` is it (constant-time comparison)."""
    if not expected:
        return True
    if not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())
