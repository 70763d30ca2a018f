"""The project's own exception hierarchy.

Library exceptions (pysnmp, aiohttp, influxdb-client, aiosmtplib, aiomqtt, sqlite3, OSError) stop at
the edge of the module that calls the library and are re-raised as one of these with ``raise ... from``,
so the daemon and the CLI only ever have to reason about this small set.
"""

from __future__ import annotations


class MonitorError(Exception):
    """Base class of every error the monitor raises on purpose."""


class ConfigError(MonitorError):
    """The configuration or inventory is invalid.

    ``problems`` holds one human-readable line per mistake, each naming the file, the key path (and
    the line where YAML gives it) and what was expected, so that ``check-config`` can list them all.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class SecretError(ConfigError):
    """A secret reference (``env:`` or ``file:``) cannot be resolved. Never carries the value."""


class ProbeError(MonitorError):
    """A probe could not produce a measurement."""


class ProbeTimeout(ProbeError):
    """The target did not answer before the poll deadline."""


class ProbeUnreachable(ProbeError):
    """The network said the target is unreachable (ICMP unreachable, no route, refused)."""


class ProbeProtocolError(ProbeError):
    """The target answered with something we cannot use (malformed reply, SNMP error status)."""


class ProbeAuthError(ProbeError):
    """SNMP authentication/privacy failed (wrong community, user, key or protocol)."""


class ProbeSetupError(ProbeError):
    """The probe cannot work at all on this machine (no raw/datagram ICMP socket, bad profile)."""


class StorageError(MonitorError):
    """The event log or the time-series database failed."""


class StorageRetryable(StorageError):
    """The time-series database is unreachable or answered 5xx: keep the batch and retry later."""


class StoragePermanent(StorageError):
    """The database rejected the batch itself for good (400, 413, ...): retrying cannot help."""


class StorageRefused(StorageError):
    """The database refuses this writer, not the batch: 401/403 (credentials, permissions) or 404
    (no such database or write endpoint). Only the configuration can fix that, so the batch is
    kept (spooled) and retried until a reload brings settings that work.

    ``reason`` is ``"auth"`` (401/403) or ``"not_found"`` (404), the label of the metrics.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class StoodDown(MonitorError):
    """The active daemon lost its lease (monitor.ha) and stopped polling and sending; the process ends
    with its own exit status, to start again as a standby."""
