"""The ``api:`` section: the daemon's HTTP API (bearer token) and the signed ack links in alerts.

Strict like the rest of the inventory, each mistake with file, line and key path. Why the extra
checks: a short token or link key can be guessed from outside, and a link that points nowhere (no
``public_url``, no key, or no API listening) would reach a technician at 3 a.m. and not work.
"""

from __future__ import annotations

from monitor.api.config import DEFAULT_LISTEN, ApiSettings
from monitor.inventory.fields import DAY, Section, type_name
from monitor.inventory.settings import SecretReader, valid_listen
from monitor.secret import Secret

KEYS = ("listen", "token", "public_url", "link_key", "link_ttl")
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
    )


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
