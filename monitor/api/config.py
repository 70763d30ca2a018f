"""The frozen ``api:`` settings: where the HTTP API listens, its token, and how ack links are signed.

Parsed and validated by :mod:`monitor.inventory.api`; read by the server (:mod:`monitor.api.server`)
and by the delivery planner, which puts a signed link for the technician into each alert email.
Secrets are :class:`Secret` objects: only the token check and the link signer reveal them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor.secret import Secret

DEFAULT_LISTEN = "127.0.0.1:9109"


@dataclass(frozen=True, slots=True)
class BoardUser:
    """A staff user of the board written in the config (``api.users``): name, role and bcrypt hash.

    The hash is what ``monitor users add`` would store; a config user overrides a ``users.json``
    one of the same name, so what the config says (e.g. from configuration management) holds.
    """

    name: str
    role: str
    password_hash: bytes = field(repr=False)  # never in a log line or an error, though it is only a hash


@dataclass(frozen=True, slots=True)
class ApiSettings:
    listen: str = DEFAULT_LISTEN  # HOST:PORT; "" = no HTTP API (links in emails still need public_url)
    token: Secret | None = None  # "Authorization: Bearer ..." for /api/v1 (required when listening)
    public_url: str = ""  # base URL technicians reach the API at (the reverse proxy), no trailing '/'
    link_key: Secret | None = None  # HMAC-SHA256 key of the one-click ack links
    link_ttl: float = 86_400.0  # a link stops working this long after the alert was planned
    users: tuple[BoardUser, ...] = ()  # board users from the config (besides <state_dir>/users.json)

    @property
    def links(self) -> bool:
        """Whether technician alerts carry a one-click ack link."""
        return bool(self.public_url) and self.link_key is not None
