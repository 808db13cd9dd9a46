"""A TCP connect before talking to a service: the cloud SDKs retry a refused connection with
backoff for half a minute or more, a user should hear about a dead endpoint in seconds."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

CONNECT_TIMEOUT_S = 5.0


def unreachable(endpoint: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """``scheme://host:port`` of ``endpoint`` when nothing accepts a connection there, else None."""
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout).close()
    except OSError:
        return f"{parts.scheme}://{parts.hostname}:{port}"
    return None
