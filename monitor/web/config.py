"""The frozen ``status_page:`` settings (parsed and validated by :mod:`monitor.inventory.status_page`).

The status page has its own listener, apart from the staff API: it is meant to be published to
everyone (behind a reverse proxy), while the API and its bearer token should stay on the NOC's side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_LISTEN = "127.0.0.1:9110"
LookupCheck = Literal["none", "phone"]


@dataclass(frozen=True, slots=True)
class StatusPageSettings:
    listen: str = DEFAULT_LISTEN  # HOST:PORT; "" = no status page
    title: str = ""  # the company's name in the page title ("" = a generic title)
    timezone: str = "UTC"  # times shown and the day buckets of the availability bars
    report_contact: str = ""  # how customers report a problem (public: a phone number, an address)
    lookup_check: LookupCheck = "phone"  # "phone": the lookup also asks the last 4 digits of the phone
    lookup_per_minute: int = 10  # lookups per client address (IPv4 /32, IPv6 /64) and minute
    trust_forwarded: bool = False  # the client address is the last X-Forwarded-For hop (behind a proxy)
    refresh: float = 2.0  # seconds: the page is rebuilt at most this often (a change shows within 2x)
    history_days: int = 90  # daily availability bars per municipality
