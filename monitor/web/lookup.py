"""The customer lookup: "is my service affected?" without telling strangers who is a customer.

* Per client address a token bucket (IPv4 /32, IPv6 /64: one household gets many v6 addresses),
  in a bounded table, so guessing numbers is slow and flooding costs memory only up to a limit.
* No enumeration: an unknown number goes down the same path as a known one (the phone digits are
  compared against a stand-in), and gets the answer a number that cannot be verified gets — with
  ``lookup_check: none``, the answer a customer with no problem gets. The server also pads every
  answer to the same minimum time, so the time taken says nothing either.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections import OrderedDict
from dataclasses import dataclass

from monitor.inventory.model import Inventory
from monitor.web.config import LookupCheck
from monitor.web.snapshot import PublicIncident, PublicWindow, Snapshot

NUMBER_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
DIGITS_RE = re.compile(r"[0-9]{4}")
MAX_CLIENTS = 50_000  # remembered client addresses (oldest forgotten first)
_STANDIN = "\x00\x00\x00\x00"  # compared against when the number is unknown: never equal to 4 digits


class RateLimiter:
    """A token bucket per key; the clock is passed in (monotonic seconds)."""

    def __init__(self, per_minute: int, max_keys: int = MAX_CLIENTS) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(per_minute)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        """Spend a token if there is one."""
        ok = not self.blocked(key, now)
        self.spend(key, now)
        return ok

    def blocked(self, key: str, now: float) -> bool:
        """Whether ``key`` has no token left (nothing spent)."""
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate) < 1.0

    def spend(self, key: str, now: float) -> None:
        """Take a token if there is one (the newest key goes last: the oldest are forgotten first)."""
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        self._buckets[key] = (tokens - 1.0 if tokens >= 1.0 else tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


def client_key(remote: str | None, forwarded: str | None, trust_forwarded: bool) -> str:
    """Whose bucket a request spends: the peer, or behind a trusted proxy the last forwarded hop."""
    addr = remote or ""
    if trust_forwarded and forwarded:
        addr = forwarded[-256:].split(",")[-1].strip()
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return "?"  # unparseable: one shared bucket, so it cannot be used to dodge the limit
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


@dataclass(frozen=True, slots=True)
class Answer:
    outcome: str  # affected | maintenance | clear | unverified | bad
    items: tuple[PublicIncident | PublicWindow, ...] = ()


class CustomerIndex:
    """Customer numbers (case-insensitive) and the last 4 digits of their phones, from the inventory."""

    def __init__(self, inv: Inventory) -> None:
        self.ids = {c.upper(): c for c in inv.customers}
        self.digits = {c.id: _last4(c.phone) for c in inv.customers.values()}

    def answer(self, number: str, digits: str, check: LookupCheck, snap: Snapshot) -> Answer:
        number, digits = number.strip(), digits.strip()
        if not NUMBER_RE.fullmatch(number) or (check == "phone" and not DIGITS_RE.fullmatch(digits)):
            return Answer("bad")
        cid = self.ids.get(number.upper())
        expected = self.digits.get(cid, _STANDIN) if cid is not None else _STANDIN
        # always compared, known number or not, so both take the same path
        verified = hmac.compare_digest(expected.encode(), digits.encode()) if check == "phone" else True
        items = snap.by_customer.get(cid or "", ())
        if cid is None or not verified:
            return Answer("unverified" if check == "phone" else "clear")
        if any(isinstance(i, PublicIncident) for i in items):
            return Answer("affected", tuple(i for i in items if isinstance(i, PublicIncident)))
        windows = tuple(i for i in items if isinstance(i, PublicWindow))
        return Answer("maintenance", windows) if windows else Answer("clear")


def _last4(phone: str | None) -> str:
    digits = "".join(ch for ch in phone or "" if ch.isdigit())
    return digits[-4:] if len(digits) >= 4 else _STANDIN  # no phone on file: cannot be verified
