"""The ``delivery:`` section: SMTP, MQTT, service desk, SMS gateway, technicians and on-call rota.

Strict like the rest of the inventory: unknown keys, unknown technicians or municipalities in the
rota, impossible shifts and inline secrets are reported with file, line and key path. Secrets are
references (``env:``/``file:``/``credential:``) resolved into :class:`Secret` objects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from monitor.delivery.config import (
    CHANNELS,
    DAYS,
    AppriseSettings,
    CustomerNotices,
    DeliveryConfig,
    DeskSettings,
    EscalationSettings,
    MaildirSettings,
    MqttSettings,
    OnCall,
    RetrySettings,
    Shift,
    SmtpSettings,
    Technician,
    WebhookSettings,
)
from monitor.durations import to_seconds
from monitor.errors import SecretError
from monitor.inventory.fields import DAY, Section, type_name
from monitor.inventory.model import NODE_KINDS
from monitor.inventory.secrets import HOW, check_reference, resolve_secret
from monitor.inventory.settings import SecretReader
from monitor.secret import Secret

TOP = ("timezone", "templates_dir", "smtp", "maildir", "mqtt", "desk", "sms", "apprise", "technicians", "oncall",
       "escalation", "customers", "rate_limits", "retry", "eta_min_change")
MAILDIR = ("path", "from")
SMTP = ("host", "port", "security", "username", "password", "from", "pool_size", "timeout", "ca_file", "verify")
MQTT = ("host", "port", "username", "password", "tls", "ca_file", "prefix", "client_id", "keepalive")
WEBHOOK = ("url", "secret", "token", "timeout")
DESK = ("kind", "url", "queue", "token", "username", "password", "address", "webhook", "path",
        "comment_min_interval", "comment_min_change", "reopen_within", "grafana_url", "language")
TECH = ("id", "name", "email", "mqtt", "language", "apprise")
MAX_APPRISE = 5  # URLs per technician
ONCALL = ("municipality", "kinds", "shifts")
SHIFT = ("days", "from", "to", "tiers")
CUSTOMERS = ("enabled", "kinds", "channels", "update_min_interval", "restore_on_partial", "maintenance_lead",
             "support_phone", "company", "unsubscribe", "unsubscribe_one_click")
RETRY = ("initial", "maximum", "factor", "jitter", "deadline")
LANGS = ("es", "en")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


def parse(top: Section, secrets: SecretReader, municipalities: Iterable[str]) -> DeliveryConfig | None:
    """The validated ``delivery:`` section, or None when absent (nothing is delivered)."""
    sec = top.section("delivery", TOP)
    if sec is None:
        return None
    tz = sec.text("timezone") or "America/Bogota"
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(tz)
    except Exception:  # ZoneInfoNotFoundError, ValueError for odd names
        sec.err("timezone", f"unknown time zone {tz!r} (expected an IANA name such as America/Bogota)")
        tz = "America/Bogota"
    techs = _technicians(sec, secrets)
    if sec.has("smtp") and sec.has("maildir"):
        sec.err("maildir", "give either smtp or maildir, not both (both are where the email channel goes)")
    return DeliveryConfig(
        smtp=_smtp(sec.section("smtp", SMTP, ("host",)), secrets),
        maildir=_maildir(sec.section("maildir", MAILDIR, ("path",)), secrets.base_dir),
        mqtt=_mqtt(sec.section("mqtt", MQTT, ("host",)), secrets),
        desk=_desk(sec.section("desk", DESK, ("kind",)), secrets),
        sms=_webhook(sec.section("sms", WEBHOOK, ("url",)), secrets),
        apprise=_apprise(sec.section("apprise", ("timeout", "customers", "rates", "gsm7")), secrets),
        technicians=techs,
        oncall=_oncall(sec, set(techs), set(municipalities)),
        timezone=tz,
        escalation=_escalation(sec.section("escalation", ("after", "max_tier", "phone_after"))),
        customers=_customers(sec.section("customers", CUSTOMERS)),
        rate_limits=_rates(sec),
        retry=_retry(sec.section("retry", RETRY)),
        templates_dir=_path(sec, "templates_dir", secrets.base_dir),
        eta_min_change=sec.duration("eta_min_change", DeliveryConfig().eta_min_change, gt=0, le=DAY),
    )


def _path(sec: Section, key: str, base_dir: Path) -> str:
    """A file or folder given relative to the config's folder, like every other path in it ("" if absent).

    Why not the working directory: under systemd that is the state directory, not where the config is.
    """
    value = sec.text(key)
    return str(base_dir / value) if value else ""


def _port(sec: Section, default: int) -> int:
    return sec.integer("port", default, 1, 65535)


def _smtp(sec: Section | None, secrets: SecretReader) -> SmtpSettings | None:
    if sec is None:
        return None
    d = SmtpSettings(host="")
    security = sec.choice("security", ("none", "starttls", "tls"), d.security) or d.security
    sender = _sender(sec, d.sender)
    return SmtpSettings(
        host=sec.text("host") or "", port=_port(sec, 465 if security == "tls" else 25),
        security="tls" if security == "tls" else "none" if security == "none" else "starttls",
        username=sec.text("username") or "", password=secrets.get(sec, "password"), sender=sender,
        pool_size=sec.integer("pool_size", d.pool_size, 1, 64),
        timeout=sec.duration("timeout", d.timeout, gt=0, le=600),
        ca_file=_path(sec, "ca_file", secrets.base_dir), verify=sec.flag("verify", True),
    )


def _sender(sec: Section, default: str) -> str:
    sender = sec.text("from") or default
    if not _EMAIL.search(sender.rsplit("<", 1)[-1].rstrip(">")):
        sec.err("from", f"bad sender {sender!r} (expected an address such as noc@example.net)")
    return sender


def _maildir(sec: Section | None, base_dir: Path) -> MaildirSettings | None:
    if sec is None:
        return None
    return MaildirSettings(path=str(base_dir / (sec.text("path") or "")),
                           sender=_sender(sec, MaildirSettings(path="").sender))


def _mqtt(sec: Section | None, secrets: SecretReader) -> MqttSettings | None:
    if sec is None:
        return None
    d = MqttSettings(host="")
    tls = sec.flag("tls", False)
    prefix = sec.text("prefix") or d.prefix
    if any(c in prefix for c in "#+") or prefix.endswith("/"):
        sec.err("prefix", f"bad topic prefix {prefix!r} (no wildcards, no trailing '/')")
    return MqttSettings(
        host=sec.text("host") or "", port=_port(sec, 8883 if tls else 1883), username=sec.text("username") or "",
        password=secrets.get(sec, "password"), tls=tls, ca_file=_path(sec, "ca_file", secrets.base_dir), prefix=prefix,
        client_id=sec.text("client_id") or d.client_id, keepalive=sec.integer("keepalive", d.keepalive, 5, 3600),
    )


def _webhook(sec: Section | None, secrets: SecretReader) -> WebhookSettings | None:
    if sec is None:
        return None
    url = sec.text("url") or ""
    if url and not url.startswith(("http://", "https://")):
        sec.err("url", f"bad URL {url!r} (expected http://... or https://...)")
    return WebhookSettings(url=url, secret=secrets.get(sec, "secret"), token=secrets.get(sec, "token"),
                           timeout=sec.duration("timeout", 10.0, gt=0, le=600))


def _desk(sec: Section | None, secrets: SecretReader) -> DeskSettings:
    d = DeskSettings()
    if sec is None:
        return d
    kind = sec.choice("kind", ("none", "rt", "email", "webhook", "folder"), "none") or "none"
    need = {"rt": ("url",), "email": ("address",), "webhook": ("webhook",), "folder": ("path",)}.get(kind, ())
    for key in need:
        if key not in sec.data:
            sec.err(None, f"missing required key {key!r} (needed for kind {kind})")
    if kind == "rt" and not (sec.has("token") or sec.has("password")):
        sec.err(None, "kind rt needs 'token' or 'username' and 'password'")
    url = sec.text("url") or ""
    if url and not url.startswith(("http://", "https://")):
        sec.err("url", f"bad URL {url!r} (expected the RT web root, e.g. https://rt.example.net)")
    address = sec.text("address") or ""
    if address and not _EMAIL.match(address):
        sec.err("address", f"bad address {address!r} (expected the desk's mailbox, e.g. soporte@example.net)")
    folder = sec.text("path") if kind == "folder" else None
    if kind != "folder" and sec.has("path"):
        sec.err("path", f"'path' is for kind folder, not {kind}")
    return DeskSettings(
        kind="rt" if kind == "rt" else "email" if kind == "email" else "webhook" if kind == "webhook"
        else "folder" if kind == "folder" else "none",
        path=str(secrets.base_dir / folder) if folder else "",
        url=url.rstrip("/"), queue=sec.text("queue") or d.queue, token=secrets.get(sec, "token"),
        username=sec.text("username") or "", password=secrets.get(sec, "password"), address=address,
        webhook=_webhook(sec.section("webhook", WEBHOOK, ("url",)), secrets),
        comment_min_interval=sec.duration("comment_min_interval", d.comment_min_interval, ge=0, le=7 * DAY),
        comment_min_change=sec.integer("comment_min_change", d.comment_min_change, 1, 100_000),
        reopen_within=sec.duration("reopen_within", d.reopen_within, ge=0, le=30 * DAY),
        grafana_url=sec.text("grafana_url") or "", language=sec.choice("language", LANGS, "es") or "es",
    )


def _apprise(sec: Section | None, secrets: SecretReader) -> AppriseSettings:
    d = AppriseSettings()
    if sec is None:
        return d
    # Apprise (~700 modules, +40-51 MB RSS) is imported only by a config that has an apprise section
    # or a technician's Apprise URLs, never by one without
    from monitor.notify.apprise import check_url, customer_url

    gateway = secrets.get(sec, "customers")
    if gateway is not None:
        problem = "" if "{phone}" in gateway.reveal() else \
            f"the URL from {gateway.source} has no {{phone}} (where the customer's number goes)"
        problem = problem or check_url(customer_url(gateway, "+573000000000")) or ""
        if problem:
            sec.err("customers", problem)
            gateway = None
    return AppriseSettings(timeout=sec.duration("timeout", d.timeout, gt=0, le=300), customers=gateway,
                           rates=_apprise_rates(sec), gsm7=sec.flag("gsm7", d.gsm7))


def _apprise_rates(sec: Section) -> dict[str, float]:
    """``rates: {tgram: 0.5, ntfys: 2}``: sends per second per Apprise service, by URL scheme."""
    raw = sec.data.get("rates")
    if raw is None:
        return {}
    from monitor.notify.apprise import APPRISE_SCHEMES  # lazily, as in _apprise

    known = [k for k in raw if isinstance(k, str) and k in APPRISE_SCHEMES] if isinstance(raw, dict) else []
    for k in raw if isinstance(raw, dict) else ():
        if k not in known:  # not Section.open's message: it would list Apprise's ~260 services
            sec.err("rates", f"unknown Apprise service {str(k)[:40]!r} (expected a URL scheme such as tgram, ntfys)")
    rates = Section.open(sec.problems, sec.file, raw, sec.key_path("rates"), sec.line("rates"), known)
    if rates is None:
        return {}
    out: dict[str, float] = {}
    for scheme in known:
        value = rates.number(scheme, None, gt=0, le=1000)
        if value is not None:
            out[scheme] = value
    return out


def _apprise_urls(t: Section, secrets: SecretReader) -> tuple[Secret, ...]:
    """A technician's Apprise URLs: a list of secret references (the URLs carry tokens), each checked
    by Apprise itself; problems name the reference and the URL's scheme, never the URL."""
    refs = t.data.get("apprise")
    if refs is None:
        return ()
    if isinstance(refs, str):  # the URL itself, token and all: said as for any inline secret
        t.err("apprise", f"secrets cannot be written inline; {HOW} (a list of them, one Apprise URL each)")
        return ()
    if not isinstance(refs, list) or not 1 <= len(refs) <= MAX_APPRISE:
        t.err("apprise", f"expected a list of 1 to {MAX_APPRISE} secret references ({HOW}), one Apprise URL each")
        return ()
    from monitor.notify.apprise import check_url  # lazily, as in _apprise

    out: list[Secret] = []
    for i, ref in enumerate(refs):
        try:
            if not secrets.resolve:
                check_reference(ref)
                continue
            url = resolve_secret(ref, secrets.base_dir, secrets.env)
        except SecretError as exc:
            t.err("apprise", f"item {i + 1}: {exc}")
            continue
        problem = check_url(url)
        if problem is not None:
            t.err("apprise", f"item {i + 1}: {problem}")
            continue
        out.append(url)
    return tuple(out)


def _technicians(sec: Section, secrets: SecretReader) -> dict[str, Technician]:
    out: dict[str, Technician] = {}
    for value, path, line in sec.items("technicians"):
        t = Section.open(sec.problems, sec.file, value, path, line, TECH, ("id", "name"))
        if t is None or (tid := t.ident("id")) is None:
            continue
        if tid in out:
            t.err("id", f"duplicate technician {tid!r}")
            continue
        email = t.text("email")
        if email is not None and not _EMAIL.match(email):
            t.err("email", f"bad address {email!r}")
            email = None
        out[tid] = Technician(tid, t.text("name") or tid, email, t.flag("mqtt", True),
                              t.choice("language", LANGS, "es") or "es", _apprise_urls(t, secrets))
    return out


def _oncall(sec: Section, techs: set[str], munis: set[str]) -> tuple[OnCall, ...]:
    out: list[OnCall] = []
    for value, path, line in sec.items("oncall"):
        r = Section.open(sec.problems, sec.file, value, path, line, ONCALL, ("municipality", "shifts"))
        if r is None:
            continue
        muni = r.text("municipality") or "*"
        if muni != "*" and muni not in munis:
            r.err("municipality", f"unknown municipality {muni!r} (expected an id from municipalities, or '*')")
        kinds = tuple(_strings(r, "kinds"))
        for k in kinds:
            if k not in NODE_KINDS:
                r.err("kinds", f"unknown node kind {k!r} (expected some of: {', '.join(NODE_KINDS)})")
        shifts: list[Shift] = []
        for sv, spath, sline in r.items("shifts"):
            s = Section.open(sec.problems, sec.file, sv, spath, sline, SHIFT, ("days", "tiers"))
            if s is None:
                continue
            tiers = tuple(_strings(s, "tiers"))
            if not tiers:
                s.err("tiers", "expected at least one technician id")
            for t in tiers:
                if t not in techs:
                    s.err("tiers", f"unknown technician {t!r} (expected an id from delivery.technicians)")
            start, end = _clock(s, "from", 0), _clock(s, "to", 1440)
            if start == end:
                s.err("to", "a shift must not start and end at the same time")
            shifts.append(Shift(_days(s), start, end, tiers))
        out.append(OnCall(muni, kinds, tuple(shifts)))
    return tuple(out)


def _strings(sec: Section, key: str) -> list[str]:
    value = sec.data.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        sec.err(key, "expected a list of strings")
        return []
    return list(value)


def _days(sec: Section) -> tuple[int, ...]:
    out: list[int] = []
    for item in _strings(sec, "days"):
        lo, _, hi = item.lower().partition("-")
        if lo not in DAYS or (hi and hi not in DAYS):
            sec.err("days", f"bad day {item!r} (expected mon..sun or a range such as mon-fri)")
            continue
        a, b = DAYS.index(lo), DAYS.index(hi or lo)
        out += [(a + i) % 7 for i in range((b - a) % 7 + 1)]
    return tuple(sorted(set(out)))


def _clock(sec: Section, key: str, default: int) -> int:
    value = sec.data.get(key)
    if value is None:
        return default
    m = _TIME.match(str(value).strip())
    minutes = int(m.group(1)) * 60 + int(m.group(2)) if m else -1
    if not m or int(m.group(2)) > 59 or not 0 <= minutes <= 1440:
        sec.err(key, f"bad time {value!r} (expected HH:MM between 00:00 and 24:00; quote it in YAML)")
        return default
    return minutes


def _escalation(sec: Section | None) -> EscalationSettings:
    d = EscalationSettings()
    if sec is None:
        return d
    return EscalationSettings(sec.duration("after", d.after, gt=0, le=7 * DAY),
                              sec.integer("max_tier", d.max_tier, 0, 10), _phone_after(sec, d.phone_after))


def _phone_after(sec: Section, default: tuple[float, ...]) -> tuple[float, ...]:
    """One duration (every rota step) or a list of them (tier 0, 1, ...; the last goes on)."""
    raw = sec.data.get("phone_after")
    if raw is None:
        return default
    items = raw if isinstance(raw, list) else [raw]
    out: list[float] = []
    for i, item in enumerate(items[:11]):
        value = to_seconds(item)
        if value is None or not 0 <= value <= DAY:
            shown = repr(item) if isinstance(item, str) else type_name(item)
            sec.err("phone_after", f"item {i + 1}: expected a duration from 0s to 1d ('5m'), got {shown[:40]}")
            return default
        out.append(value)
    if not out or len(items) > 11:
        sec.err("phone_after", "expected a duration or a list of 1 to 11 (one per rota step)")
        return default
    return tuple(out)


def _customers(sec: Section | None) -> CustomerNotices:
    d = CustomerNotices()
    if sec is None:
        return d
    kinds = tuple(_strings(sec, "kinds")) if sec.has("kinds") else d.kinds
    for k in kinds:
        if k not in ("outage", "suspected", "single", "degraded", "power"):
            sec.err("kinds", f"bad kind {k!r} (expected some of: outage, suspected, single, degraded, power)")
    channels = tuple(_strings(sec, "channels")) if sec.has("channels") else d.channels
    for c in channels:
        if c not in ("email", "sms", "apprise"):
            sec.err("channels", f"bad channel {c!r} (expected some of: email, sms, apprise)")
    return CustomerNotices(
        enabled=sec.flag("enabled", d.enabled), kinds=kinds, channels=channels,
        update_min_interval=sec.duration("update_min_interval", d.update_min_interval, ge=0, le=7 * DAY),
        restore_on_partial=sec.flag("restore_on_partial", d.restore_on_partial),
        maintenance_lead=sec.duration("maintenance_lead", d.maintenance_lead, ge=0, le=30 * DAY),
        support_phone=sec.text("support_phone") or "", company=sec.text("company") or d.company,
        unsubscribe=_unsubscribe(sec), unsubscribe_one_click=_one_click(sec),
    )


_UNSUBSCRIBE = re.compile(r"^(mailto:[^@]+@.+|https://.+)$")


def _unsubscribe(sec: Section) -> str:
    """The opt-out URL: printable ASCII, nothing in it that ends the header's <...> or starts another entry."""
    url = sec.text("unsubscribe") or ""
    bad = any(not 33 <= ord(ch) <= 126 or ch in "<>," for ch in url)
    if url and (len(url) > 500 or bad or not _UNSUBSCRIBE.match(url)):
        sec.err("unsubscribe", "expected a mailto: address or an https:// URL in ASCII without spaces, commas or <> "
                               "(at most 500 characters; {customer} is replaced by the customer's id)")
        return ""
    return url


def _one_click(sec: Section) -> bool:
    one_click = sec.flag("unsubscribe_one_click", False)
    if one_click and not (sec.text("unsubscribe") or "").startswith("https://"):
        sec.err("unsubscribe_one_click", "needs an https:// unsubscribe URL (RFC 8058: a POST to it opts out)")
    return one_click


def _rates(sec: Section) -> dict[str, float]:
    rates = sec.section("rate_limits", CHANNELS)
    out: dict[str, float] = {}
    if rates is None:
        return out
    for ch in CHANNELS:
        value = rates.number(ch, None, gt=0, le=1000)
        if value is not None:
            out[ch] = value
    return out


def _retry(sec: Section | None) -> RetrySettings:
    d = RetrySettings()
    if sec is None:
        return d
    r = RetrySettings(
        initial=sec.duration("initial", d.initial, gt=0, le=DAY),
        maximum=sec.duration("maximum", d.maximum, gt=0, le=7 * DAY),
        factor=sec.number("factor", d.factor, ge=1.0, le=10.0) or d.factor,
        jitter=sec.number("jitter", d.jitter, ge=0.0, le=1.0) or 0.0,
        deadline=sec.duration("deadline", d.deadline, gt=0, le=30 * DAY),
    )
    if r.maximum < r.initial:
        sec.err("maximum", "must not be below initial")
    return r
