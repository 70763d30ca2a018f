"""The ``apprise`` channel: short alerts to technicians' phones and chats through Apprise.

Apprise speaks to ntfy, Gotify, Telegram, Signal, Matrix, Slack, SMS gateways, generic JSON/form
webhooks and dozens more, each addressed by one URL (``ntfys://ntfy.sh/noc-juan``,
``tgram://<bot token>/<chat>``). Those URLs embed tokens, so they are :class:`Secret` objects from
the usual secret sources and never leave this module: an outbox row names only the technician and
which of their URLs (``juan#1``), and every message we log or store is our own, built from the
service's name and the HTTP status — never Apprise's text, which may quote a URL.

One row is one URL, so a retry repeats only the destination that failed. Apprise's outcome is
mapped like the webhook's: HTTP 408, 429 and 5xx, timeouts and connection errors are retried;
other 4xx (a revoked token, an unknown chat) are permanent. Apprise's own calls are synchronous
(``requests``); its ``async_notify`` runs them in its worker threads, so the event loop is never
blocked.

Exactly once across a SIGKILL for services that send a notice in one request (:data:`ONE_REQUEST`,
one target): the request's last byte is its point of no return, sent on the event loop together
with the outbox's hand-over record (:mod:`monitor.notify.handover`); the others are sent at least once.

Two Apprise defaults are changed on purpose. ``timeout`` becomes each service's connect and read
timeout, never Apprise's *call* timeout: that one stops waiting but leaves the thread sending, so
a message it called timed out arrived anyway and its retry arrived twice (seen in the tests). And
Apprise's own pacing (most services wait 5.5 s after each request, per URL, sleeping in the thread
that holds one of our lanes) is off: ``rate_limits: {apprise: …}`` paces the channel like any other,
and ``apprise.rates`` each service (URL scheme) with a token bucket that waits on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import apprise
from apprise.manager_plugins import NotificationManager

from monitor.delivery.config import AppriseSettings, Technician
from monitor.delivery.outbox import HandedOver, Row
from monitor.delivery.retry import DeliveryPermanent, DeliveryRetryable
from monitor.delivery.worker import RateLimit
from monitor.notify import handover
from monitor.notify.gsm import to_gsm7
from monitor.secret import Secret

# Apprise logs request URLs (with tokens in their path for some services) at DEBUG: whatever our
# own log level, its logger never goes below WARNING, whose messages name hosts, not URLs.
logging.getLogger("apprise").setLevel(logging.WARNING)
handover.install()

_STATUS = re.compile(r"error=(\d{3})\b")
# Apprise's own webhooks, which take extra headers ("+Name=value" in the URL): they get Idempotency-Key
KEYED = frozenset({"json", "jsons", "form", "forms", "xml", "xmls"})
_ASSET = apprise.AppriseAsset(storage_mode="memory", secure_logging=True)
# services whose plugin sends one notice to one target in exactly one HTTP request: for those the
# request's last byte is the notice's point of no return (monitor/notify/handover.py); Telegram too,
# with one chat id and no image (_one_request). Others may make several (Matrix logs in first, Slack
# uploads) and are sent at least once.
ONE_REQUEST = frozenset({"json", "jsons", "form", "forms", "xml", "xmls", "ntfy", "ntfys", "gotify", "gotifys",
                         "twilio", "vonage", "nexmo"})
# every service Apprise speaks (ntfy, tgram, json...); its plugin manager is not annotated
APPRISE_SCHEMES: frozenset[str] = frozenset(NotificationManager().schemas())  # type: ignore[no-untyped-call]


def destination(recipient: str) -> tuple[str, int]:
    """``"juan#2"`` → ``("juan", 1)``: the technician and the index of one of their URLs."""
    tech, _, index = recipient.rpartition("#")
    return tech, int(index) - 1 if index.isdigit() and int(index) > 0 else -1


def customer_url(gateway: Secret, phone: str) -> Secret:
    """The customers' gateway URL with ``{phone}`` replaced by the number (digits and a leading +)."""
    number = ("+" if phone.strip().startswith("+") else "") + "".join(ch for ch in phone if ch.isdigit())
    return Secret(gateway.reveal().replace("{phone}", number), gateway.source)


def check_url(url: Secret) -> str | None:
    """None if Apprise can use this URL, else a problem that names its scheme only when that is one of
    Apprise's services (whatever precedes "://" in a malformed value may be the token itself)."""
    scheme = url.reveal().split("://", 1)[0].lower() if "://" in url.reveal() else ""
    if not scheme or not scheme.isalnum():
        return f"the value of {url.source} is not a URL (expected scheme://…, such as ntfys://ntfy.sh/topic)"
    if scheme not in APPRISE_SCHEMES:
        return f"the URL from {url.source} names no service Apprise knows (expected ntfys://, tgram://, json://…)"
    if apprise.Apprise.instantiate(url.reveal(), asset=_ASSET) is None:
        return f"Apprise cannot use the {scheme}:// URL from {url.source} (a part is missing or malformed)"
    return None


class AppriseSender:
    """Sends one row to one Apprise URL of one technician."""

    channel = "apprise"

    def __init__(self, settings: AppriseSettings, technicians: Mapping[str, Technician], *,
                 now: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.s = settings
        self.technicians = technicians
        # technicians' (a few): kept; customers' made per send
        self._services: dict[str, tuple[apprise.Apprise, bool]] = {}
        # per service (scheme): Telegram, Twilio and co. throttle a sender; the channel's own
        # rate_limits still applies on top
        self.limits = {scheme: RateLimit(rate, now=now, sleep=sleep) for scheme, rate in settings.rates.items()}

    def _url(self, row: Row) -> Secret:
        if not row.action.startswith("tech_"):  # a customer notice: the gateway, to the customer's number
            if self.s.customers is None:
                raise DeliveryPermanent("no apprise.customers gateway in the config any more", "no_address")
            return customer_url(self.s.customers, row.recipient)
        tech_id, index = destination(row.recipient)
        tech = self.technicians.get(tech_id)
        if tech is None or not 0 <= index < len(tech.apprise):
            raise DeliveryPermanent(f"no Apprise URL {row.recipient} in the config any more", "no_address")
        return tech.apprise[index]

    def _service(self, row: Row) -> tuple[apprise.Apprise, bool]:
        """The row's Apprise object, and whether its one request is its point of no return."""
        cached = self._services.get(row.recipient)
        if cached is not None:
            return cached
        url = self._url(row).reveal()
        scheme = url.split("://", 1)[0].lower()
        keyed = scheme in KEYED
        if keyed:  # the outbox key as a header: a receiver drops the repeat of a notice after a crash
            url += ("&" if "?" in url else "?") + "+Idempotency-Key=" + quote(row.key, safe="")
        plugin = apprise.Apprise.instantiate(url, asset=_ASSET)
        if plugin is None:
            raise DeliveryPermanent(f"Apprise cannot use the URL of {row.recipient}", "bad_url")
        plugin.socket_connect_timeout = plugin.socket_read_timeout = self.s.timeout
        plugin.request_rate_per_sec = 0
        service = apprise.Apprise(asset=_ASSET)
        service.add(plugin)
        one = _one_request(scheme, plugin)
        if row.action.startswith("tech_") and not keyed:
            self._services[row.recipient] = (service, one)
        return service, one

    async def send(self, row: Row, handed_over: HandedOver | None = None) -> str | None:
        p = row.payload
        # parsing a URL into a plugin takes ~1-3 ms of Python: per send for customers and keyed
        # webhooks, so in a thread, not on the event loop
        cached = self._services.get(row.recipient)
        service, one = cached if cached is not None else await asyncio.to_thread(self._service, row)
        limit = self.limits.get(self._url(row).reveal().split("://", 1)[0].lower())
        if limit is not None:
            await limit.acquire()
        body = p["body"]
        if self.s.gsm7 and not row.action.startswith("tech_"):  # an SMS gateway: one SMS, not three
            body = to_gsm7(body)
        # armed for this send only (a context variable: Apprise's executor carries it into its thread)
        armed = None if handed_over is None or not one else handover.Handover(
            asyncio.get_running_loop(), handed_over, self.s.timeout)
        token = handover.ARMED.set(armed)
        try:
            result = await service.async_notify(body=body, title=p.get("subject", ""))
        finally:
            handover.ARMED.reset(token)
            if armed is not None:
                armed.active = False  # a thread still sending (cancelled here) never sends its last byte
        if result:
            return "sent"
        status = result.status
        if status == apprise.AppriseResultStatus.TIMEOUT:
            raise DeliveryRetryable(f"Apprise {_names(result)} for {row.recipient}: no answer in time", "timeout")
        code = _http_status(result)
        where = f"Apprise {_names(result)} for {row.recipient}"
        if code is None:
            raise DeliveryRetryable(f"{where}: not delivered (unreachable)", "unreachable")
        if code in (408, 429) or code >= 500:
            raise DeliveryRetryable(f"{where}: answered {code}", f"http_{code}")
        raise DeliveryPermanent(f"{where}: answered {code}", f"http_{code}")

    async def close(self) -> None:
        self._services.clear()


def _one_request(scheme: str, plugin: Any) -> bool:
    """Whether this plugin sends a notice in exactly one HTTP request (so its last byte is the notice's
    point of no return). One target: a URL may name several numbers, topics or chats, one request each."""
    if scheme == "tgram":  # one sendMessage per chat, unless it must look its chat up, sends an image
        # first, or renders a rich-message template
        return (len(getattr(plugin, "targets", ())) == 1 and getattr(plugin, "include_image", True) is False
                and not getattr(plugin, "template", True))
    return scheme in ONE_REQUEST and len(plugin) == 1


def _names(result: apprise.AppriseResult) -> str:
    return "/".join(sorted({r.name for r in result.results})) or "service"


def _http_status(result: apprise.AppriseResult) -> int | None:
    """The HTTP status a failed service reported (Apprise says it as ``error=NNN`` in its log)."""
    for service in result.results:
        for entry in service.logs():
            m = _STATUS.search(str(entry.message))
            if m:
                return int(m.group(1))
    return None
