"""What the writer needs from a database: send one line-protocol body, say how it failed.

Backends translate their library's exceptions into :class:`StorageRetryable` (unreachable,
timeout, 5xx, 429: keep the batch and retry), :class:`StorageRefused` (401, 403, 404: the database
refuses *us* — credentials, permissions, database name, API — keep the batch until a reload fixes
the settings) or :class:`StoragePermanent` (any other 4xx, e.g. 400 for a malformed line or a
field type conflict: this batch can never succeed). Messages name the server by scheme://host:port only — never a token,
password or user info.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit

from monitor.errors import StorageError, StoragePermanent, StorageRefused, StorageRetryable


class Backend(Protocol):
    name: str  # e.g. "influxdb1 http://127.0.0.1:8086 db=monitor", safe to log

    async def write(self, body: bytes) -> None: ...

    async def close(self) -> None: ...


def public_url(url: str) -> str:
    """``url`` without user info, path or query: what logs may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def http_error(backend: str, status: int, body: str) -> StorageError:
    """Classify an HTTP error answer. The body is cut short: servers may echo a whole batch."""
    text = " ".join(body.split())[:200]
    message = f"{backend}: HTTP {status} {text}".rstrip()
    if status == 429 or status >= 500:
        return StorageRetryable(message)
    if status in (401, 403):
        return StorageRefused(message, "auth")
    if status == 404:
        return StorageRefused(message, "not_found")
    return StoragePermanent(message)


def connection_error(backend: str, exc: BaseException) -> StorageRetryable:
    detail = str(exc) or type(exc).__name__
    return StorageRetryable(f"{backend}: {detail}")
