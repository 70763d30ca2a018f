"""The frozen ``delivery:`` settings: where notices go, who is on call, how hard to retry.

Parsed and validated by :mod:`monitor.inventory.delivery`; read by the planner (pure) and by the
workers. Secrets are :class:`Secret` objects that only the senders reveal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from monitor.secret import Secret

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CHANNELS = ("email", "mqtt", "desk", "webhook", "apprise")  # the registry's names (delivery/channels.py)
NoticeKind = Literal["outage", "suspected", "single", "planned", "degraded", "power"]


@dataclass(frozen=True, slots=True)
class RetrySettings:
    initial: float = 2.0  # first back-off, seconds
    maximum: float = 300.0  # back-off cap
    factor: float = 2.0
    jitter: float = 0.5  # share of each back-off that is random (0 = none, 1 = full jitter)
    deadline: float = 86_400.0  # give up (status "failed") this long after the item was queued


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int = 25
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str = ""
    password: Secret | None = None
    sender: str = "noc@localhost"  # From: of every mail
    pool_size: int = 4  # persistent connections
    timeout: float = 30.0
    ca_file: str = ""
    verify: bool = True


@dataclass(frozen=True, slots=True)
class MaildirSettings:
    """Mail written into a local Maildir instead of sent (``monitor demo``, dry runs, air-gapped tests)."""

    path: str  # absolute (the loader resolves it against the config file's folder)
    sender: str = "noc@localhost"  # From: of every mail, as with SMTP


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str
    port: int = 1883
    username: str = ""
    password: Secret | None = None
    tls: bool = False
    ca_file: str = ""
    prefix: str = "isp-monitor"
    client_id: str = "isp-monitor"
    keepalive: int = 30


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    url: str
    secret: Secret | None = None  # HMAC-SHA256 key for the signature header
    token: Secret | None = None  # sent as "Authorization: Bearer ..."
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class AppriseSettings:
    """The ``apprise`` channel: technicians' URLs are theirs; customers are reached through one
    gateway URL in which ``{phone}`` becomes the customer's number (``customers.channels: [apprise]``)."""

    timeout: float = 10.0  # one send, seconds: then it is retried
    customers: Secret | None = None  # e.g. twilio://SID:TOKEN@+576070000000/{phone}
    rates: dict[str, float] = field(default_factory=dict)  # per service (URL scheme): sends per second
    gsm7: bool = True  # customers' notices through the gateway in the GSM-7 alphabet (160 per SMS, not 70)


@dataclass(frozen=True, slots=True)
class DeskSettings:
    kind: Literal["none", "rt", "email", "webhook", "folder"] = "none"
    # rt: REST2 base URL (http://rt.example/REST/2.0 or the web root), queue, token or basic auth
    url: str = ""
    queue: str = "General"
    token: Secret | None = None
    username: str = ""
    password: Secret | None = None
    # email-to-ticket
    address: str = ""
    # webhook
    webhook: WebhookSettings | None = None
    # folder: one text file per ticket in this directory (absolute; ``monitor demo``)
    path: str = ""
    comment_min_interval: float = 600.0  # at most one "affected set changed" comment per this
    comment_min_change: int = 1  # customers added/removed that make a change "meaningful"
    reopen_within: float = 3600.0  # a new incident on the same root this soon reopens the old ticket
    grafana_url: str = ""  # link in tickets; "{incident}" and "{root}" are substituted
    language: str = "es"  # of ticket texts


@dataclass(frozen=True, slots=True)
class Technician:
    id: str
    name: str
    email: str | None = None
    mqtt: bool = True  # alert on the municipality's technician topic too
    language: str = "es"
    apprise: tuple[Secret, ...] = ()  # Apprise URLs (phone, chat): short alerts there too


@dataclass(frozen=True, slots=True)
class Shift:
    days: tuple[int, ...]  # 0 = Monday
    start: int  # minutes after local midnight
    end: int  # exclusive; 1440 = end of day
    tiers: tuple[str, ...]  # technician ids: tier 0 first, then escalation order


@dataclass(frozen=True, slots=True)
class OnCall:
    municipality: str  # "*" = any
    kinds: tuple[str, ...] = ()  # node kinds of the root; empty = any
    shifts: tuple[Shift, ...] = ()


@dataclass(frozen=True, slots=True)
class EscalationSettings:
    after: float = 900.0  # not acknowledged this long → next tier
    max_tier: int = 3
    # per rota step (tier 0, 1, ...; the last value goes on): how long after that tier's alert its
    # phone/chat message (Apprise) waits for an acknowledgement first; 0 = with the e-mail
    phone_after: tuple[float, ...] = (0.0,)

    def phone_wait(self, tier: int) -> float:
        steps = self.phone_after
        return steps[min(tier, len(steps) - 1)] if steps else 0.0


@dataclass(frozen=True, slots=True)
class CustomerNotices:
    enabled: bool = True
    # add "single" to notify lone failures, "degraded" for a "degraded service" notice during a lossy link,
    # "power" for a short "power cut in your area" notice (ONUs' dying gasp; never to a lone ONU's customer)
    kinds: tuple[str, ...] = ("outage", "suspected")
    channels: tuple[str, ...] = ("email",)  # "email", "sms" (the sms webhook), "apprise" (apprise.customers)
    update_min_interval: float = 3600.0
    restore_on_partial: bool = True  # a customer back before the incident ends hears it then
    maintenance_lead: float = 172_800.0  # advance notice of maintenance windows
    support_phone: str = ""
    company: str = "ISP"
    #: where a customer opts out (RFC 2369 List-Unsubscribe of every customer mail): a mailto: or https: URL,
    #: ``{customer}`` replaced by the customer's id; "" = no header
    unsubscribe: str = ""
    #: the https: URL takes a POST and opts out at once (RFC 8058 List-Unsubscribe-Post: One-Click)
    unsubscribe_one_click: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    smtp: SmtpSettings | None = None
    maildir: MaildirSettings | None = None  # the email channel's other sink: files instead of SMTP
    mqtt: MqttSettings | None = None
    desk: DeskSettings = field(default_factory=DeskSettings)
    sms: WebhookSettings | None = None
    apprise: AppriseSettings = field(default_factory=AppriseSettings)
    technicians: dict[str, Technician] = field(default_factory=dict)
    oncall: tuple[OnCall, ...] = ()
    timezone: str = "America/Bogota"
    escalation: EscalationSettings = field(default_factory=EscalationSettings)
    customers: CustomerNotices = field(default_factory=CustomerNotices)
    rate_limits: dict[str, float] = field(default_factory=dict)  # channel → items per second
    retry: RetrySettings = field(default_factory=RetrySettings)
    templates_dir: str = ""  # searched before the built-in templates
    eta_min_change: float = 300.0  # a restoration estimate moved by less is not worth a comment or a notice

    @property
    def email(self) -> bool:
        """Whether the email channel has somewhere to go (an SMTP relay or a Maildir)."""
        return self.smtp is not None or self.maildir is not None

    @property
    def phone(self) -> bool:
        """Whether the apprise channel has anyone to reach (a technician with an Apprise URL, or customers)."""
        return self.apprise.customers is not None or any(t.apprise for t in self.technicians.values())
