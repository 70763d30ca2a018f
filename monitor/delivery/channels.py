"""The channel registry: which outbox channels a ``delivery:`` config turns on, and how each runs.

The delivery service knows channels only through this module (the way alertmanager assembles its
receivers outside its notify package): each registry entry names an outbox channel, the template
kind its rows are rendered with, and a builder that maps the config to a :class:`Channel` — the
sender, the worker's options (concurrency, batch), an optional background keeper (a connection
kept open, such as MQTT's) and an optional source of acknowledgements (a desk whose tickets staff
take). Adding a channel means one sender module in ``monitor/notify/`` (or ``monitor/desk/``) plus
one :data:`REGISTRY` entry here; the service, the workers and the metrics need no change.

Builders run when the service starts its workers (not at import or config load), so a channel
opens no connection until the daemon runs. The Apprise sender is imported by its builder, not here:
Apprise loads ~700 modules (+40-51 MB RSS), which a daemon with no phone channel never needs.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from monitor.clock import Clock
from monitor.delivery.config import DeliveryConfig
from monitor.delivery.outbox import Outbox
from monitor.delivery.worker import Sender
from monitor.desk.base import Desk, DeskSender
from monitor.desk.folder import FolderDesk
from monitor.desk.rt import RTDesk
from monitor.desk.webhook import WebhookDesk
from monitor.notify.email import EmailSender
from monitor.notify.maildir import MaildirSender
from monitor.notify.mqtt import MqttSender
from monitor.notify.webhook import WebhookPoster, WebhookSender

#: How a channel's rows are rendered: "email" (subject and body), "sms" (a short body), "ticket"
#: (subject and body in the desk's words), or ``None``: the planner's data is the payload as it is
#: (MQTT's JSON documents). Ticket rows (``ticket_*`` actions) are rendered as tickets on any channel
#: (email-to-ticket desks take them by mail).
TextKind = Literal["email", "sms", "ticket"] | None


class AckSource(Protocol):
    """Something staff act on outside the monitor whose state counts as an acknowledgement."""

    name: str

    async def taken(self, ticket: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Hooks:
    """What a channel may call back into the delivery service."""

    ack: Callable[[str, str], None]  # (incident, by): a receiver acknowledged an incident
    ready: Callable[[str], None]  # (channel): its receiver is back, rows waiting for a retry are due now


@dataclass(frozen=True, slots=True)
class Env:
    """What builders get besides the config."""

    config: DeliveryConfig
    outbox: Outbox
    clock: Clock
    hooks: Hooks


@dataclass(frozen=True, slots=True)
class Channel:
    """One running channel: its sender and how its worker drives it."""

    sender: Sender
    concurrency: int = 1  # lanes sending at once (the SMTP pool size; 1 where order matters)
    batch: int = 500  # rows taken from the outbox per round
    keeper: Callable[[], Coroutine[Any, Any, None]] | None = None  # runs beside the worker (a connection)
    acks: AckSource | None = None  # polled for acknowledgements (tickets staff took)


Builder = Callable[[Env], Channel | None]


@dataclass(frozen=True, slots=True)
class Entry:
    name: str  # the outbox channel, the metrics label, the ``rate_limits`` key
    text: TextKind
    build: Builder


def _email(env: Env) -> Channel | None:
    cfg = env.config
    if cfg.smtp is not None:
        # outcomes are recorded per message: a crash repeats at most the pool's messages on the
        # wire (with the same Message-IDs)
        return Channel(EmailSender(cfg.smtp), concurrency=cfg.smtp.pool_size, batch=8 * cfg.smtp.pool_size)
    if cfg.maildir is not None:
        return Channel(MaildirSender(cfg.maildir), batch=50)
    return None


def _mqtt(env: Env) -> Channel | None:
    if env.config.mqtt is None:
        return None
    sender = MqttSender(env.config.mqtt, env.config.retry, env.clock, on_ack=env.hooks.ack,
                        on_connect=lambda: env.hooks.ready("mqtt"))
    return Channel(sender, batch=100, keeper=sender.keep)


def _desk(env: Env) -> Channel | None:
    d = env.config.desk
    desk: Desk
    if d.kind == "rt":
        desk = RTDesk(d)
    elif d.kind == "webhook" and d.webhook is not None:
        desk = WebhookDesk(d.webhook)
    elif d.kind == "folder":
        desk = FolderDesk(Path(d.path))
    else:  # "none", or "email": email-to-ticket rows go out on the email channel
        return None
    return Channel(DeskSender(desk, env.outbox), batch=50, acks=desk)


def _sms_webhook(env: Env) -> Channel | None:
    if env.config.sms is None:
        return None
    return Channel(WebhookSender(WebhookPoster(env.config.sms)), concurrency=4)


def _apprise(env: Env) -> Channel | None:
    if not env.config.phone:
        return None
    from monitor.notify.apprise import AppriseSender  # only now: Apprise is ~700 modules (module docstring)

    # lanes: a slow chat service must not hold up the other technicians' phones
    return Channel(AppriseSender(env.config.apprise, env.config.technicians), concurrency=4, batch=100)


#: Every channel, by outbox name, in the order their workers start.
REGISTRY: dict[str, Entry] = {e.name: e for e in (
    Entry("email", "email", _email),
    Entry("mqtt", None, _mqtt),
    Entry("desk", "ticket", _desk),
    Entry("webhook", "sms", _sms_webhook),
    Entry("apprise", "sms", _apprise),
)}


def build(env: Env) -> dict[str, Channel]:
    """The channels this config turns on, by name."""
    out: dict[str, Channel] = {}
    for name, entry in REGISTRY.items():
        channel = entry.build(env)
        if channel is not None:
            out[name] = channel
    return out
