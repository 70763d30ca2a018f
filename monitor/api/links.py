"""Signed one-click ack links: ``<public_url>/ack/<incident>?by=<tech>&exp=<epoch>&sig=<hex>``.

``sig`` is HMAC-SHA256 over ``incident|by|exp`` with ``api.link_key``, so a link acknowledges only
that incident, as that technician, until ``exp``; changing any part of it breaks the signature.
Pure (no clock inside): the planner passes the time it plans at, the server the time a link is used.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import quote, urlencode

from monitor.api.config import ApiSettings
from monitor.secret import Secret

_EXP = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses
_SIG = re.compile(r"[0-9a-f]{64}")
MAX_FIELD = 100  # characters of the incident id and of "by"


class AckLinks:
    def __init__(self, key: Secret, ttl: float, public_url: str = "") -> None:
        self._key = key
        self.ttl = ttl
        self.public_url = public_url

    @classmethod
    def from_settings(cls, api: ApiSettings | None) -> AckLinks | None:
        """The signer of the configured links; None when links are not configured."""
        if api is None or api.link_key is None:
            return None
        return cls(api.link_key, api.link_ttl, api.public_url)

    def sign(self, incident: str, by: str, exp: int) -> str:
        msg = f"{incident}|{by}|{exp}".encode()
        return hmac.new(self._key.reveal().encode(), msg, hashlib.sha256).hexdigest()

    def link(self, incident: str, by: str, now: float) -> str:
        """The link for technician ``by``, valid for ``ttl`` from ``now``."""
        exp = int(now + self.ttl)
        query = urlencode({"by": by, "exp": exp, "sig": self.sign(incident, by, exp)})
        return f"{self.public_url}/ack/{quote(incident, safe='')}?{query}"

    def refusal(self, incident: str, by: str, exp: str, sig: str, now: float) -> str | None:
        """Why a link must not be honoured (shown to whoever opened it), or None when it is good.

        The signature is checked first (in constant time), so a forged link never learns whether
        its expiry would have passed; a genuine but expired one says so.
        """
        if not (_EXP.fullmatch(exp) and _SIG.fullmatch(sig) and _field(incident) and _field(by)):
            return "this link is not valid"
        if not hmac.compare_digest(self.sign(incident, by, int(exp)).encode(), sig.encode()):
            return "this link is not valid"
        if now > int(exp):
            return "this link has expired"
        return None


def _field(value: str) -> bool:
    """A signable part: non-empty, bounded, printable (no lone surrogates), without the separator."""
    return 0 < len(value) <= MAX_FIELD and value.isprintable() and "|" not in value
