"""The ``api:`` section: the daemon's HTTP API (bearer token) and the signed ack links in alerts.

Strict like the rest of the inventory, each mistake with file, line and key path. Why the extra
checks: a short token or link key can be guessed from outside, and a link that points nowhere (no
``public_url``, no key, or no API listening) would reach a technician at 3 a.m. and not work.
"""

from __future__ import annotations

import re

from monitor.api.config import DEFAULT_LISTEN, ApiSettings, BoardUser
from monitor.inventory.fields import DAY, Section, type_name
from monitor.inventory.settings import SecretReader, valid_listen
from monitor.secret import Secret
from monitor.web.users import NAME_RE, ROLES

KEYS = ("listen", "token", "public_url", "link_key", "link_ttl", "users")
USER_KEYS = ("name", "role", "password_hash")
#: what bcrypt.hashpw writes: $2b$, a two-digit cost, 22 characters of salt and 31 of hash
BCRYPT_RE = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
MIN_SECRET = 16  # characters; both secrets are checked from outside, so they must not be guessable
HOW_RANDOM = "e.g. python3 -c 'import secrets; print(secrets.token_hex(24))'"


def parse(top: Section, secrets: SecretReader, metrics_listen: str) -> ApiSettings | None:
    """The validated ``api:`` section, or None when absent (no API, no links in alerts)."""
    sec = top.section("api", KEYS)
    if sec is None:
        return None
    d = ApiSettings()
    listen = _listen(sec, metrics_listen)
    public_url = (sec.text("public_url") or "").rstrip("/")
    if public_url and not public_url.startswith(("http://", "https://")):
        sec.err("public_url", f"bad URL {public_url!r} (expected http://... or https://..., the address "
                              "technicians open)")
    if listen and "token" not in sec.data:
        sec.err(None, "missing required key 'token' (the API needs a bearer token; listen: '' turns it off)")
    if sec.has("public_url") and not sec.has("link_key"):
        sec.err("public_url", "ack links need link_key too (they are signed with it)")
    if sec.has("link_key") and not sec.has("public_url"):
        sec.err("link_key", "signed ack links need public_url too (the base of each link)")
    if sec.has("public_url") and not listen:
        sec.err("public_url", "ack links need the API listening (listen is '')")
    return ApiSettings(
        listen=listen,
        token=_secret(sec, secrets, "token", live=bool(listen)),
        public_url=public_url,
        link_key=_secret(sec, secrets, "link_key", live=True),
        link_ttl=sec.duration("link_ttl", d.link_ttl, gt=0, le=30 * DAY),
        users=_users(sec),
    )


def _users(sec: Section) -> tuple[BoardUser, ...]:
    """``users:``: board users with a bcrypt hash (``monitor users hash`` prints one), each name once."""
    out: dict[str, BoardUser] = {}
    for value, path, line in sec.items("users"):
        u = Section.open(sec.problems, sec.file, value, path, line, USER_KEYS, USER_KEYS)
        if u is None or not all(k in u.data for k in USER_KEYS):
            continue
        name, role, hashed = u.data["name"], u.data["role"], u.data["password_hash"]
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            u.err("name", f"bad user name {name!r} (lower-case letters, digits, '.', '_', '-'; 32 at most)")
        elif name in out:
            u.err("name", f"user {name!r} is listed twice")
        elif role not in ROLES:
            u.err("role", f"unknown role {role!r} (expected {', '.join(ROLES)})")
        elif not isinstance(hashed, str) or not BCRYPT_RE.fullmatch(hashed):  # the value is not shown
            u.err("password_hash", "expected a bcrypt hash ($2b$12$ and 53 characters; `monitor users hash` "
                                   "prints one), not a password")
        else:
            out[name] = BoardUser(name, role, hashed.encode())
    return tuple(out.values())


def _listen(sec: Section, metrics_listen: str) -> str:
    listen = sec.data.get("listen", DEFAULT_LISTEN)
    if not isinstance(listen, str):
        sec.err("listen", f"expected a string such as {DEFAULT_LISTEN} ('' turns the API off), "
                          f"got {type_name(listen)}")
        return DEFAULT_LISTEN
    if listen and not valid_listen(listen):
        sec.err("listen", f"bad listen address {listen!r} (expected HOST:PORT such as {DEFAULT_LISTEN}, "
                          "or '' to turn the API off)")
    elif listen and listen == metrics_listen:
        sec.err("listen", f"{listen} is already daemon.metrics_listen (give the API its own port)")
    return listen


def _secret(sec: Section, secrets: SecretReader, key: str, *, live: bool) -> Secret | None:
    """The secret, long enough to resist guessing; with ``live`` False only its form is checked."""
    secret = secrets.get(sec, key, live)
    if secret is not None and len(secret.reveal()) < MIN_SECRET:  # length only, never shown
        sec.err(key, f"the {key} from {secret.source} is shorter than {MIN_SECRET} characters "
                     f"(use a random one, {HOW_RANDOM})")
        return None
    return secret
