"""The text ``monitor check-config`` prints when the inventory is valid.

Why: an operator who edited the inventory wants to see at a glance that the counts are what they
meant (every tower, every subscriber) before reloading the daemon. Deterministic (sorted), and it
shows credential names and levels only, never a secret value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from monitor.delivery.config import DeliveryConfig
from monitor.inventory.fields import fmt_num
from monitor.inventory.model import PON_PORT_KIND, Inventory, SnmpCredentials
from monitor.inventory.table_keys import has_ports


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
        .rstrip()
        for r in [header, *rows]
    ]


def _level(c: SnmpCredentials) -> str:
    if c.version == "2c":
        return c.name
    if c.auth_protocol is None:
        return f"{c.name} (noAuthNoPriv, user {c.user})"
    if c.priv_protocol is None:
        return f"{c.name} (authNoPriv {c.auth_protocol}, user {c.user})"
    return f"{c.name} (authPriv {c.auth_protocol}/{c.priv_protocol}, user {c.user})"


def summarize(inv: Inventory) -> str:
    nodes, endpoints = inv.nodes(), inv.endpoints()
    lines = [
        f"inventory: {inv.source}",
        f"targets: {len(inv.targets)} ({len(nodes)} nodes, {len(endpoints)} endpoints), "
        f"{len(inv.customers)} customers, {len(inv.sites)} sites",
        "",
    ]
    n_by = Counter(t.municipality for t in nodes)
    e_by = Counter(t.municipality for t in endpoints)
    rows = [(f"{m.id} ({m.name})", str(n_by[m.id]), str(e_by[m.id])) for m in sorted(inv.municipalities.values(),
                                                                                       key=lambda m: m.id)]
    if n_by[None] or e_by[None]:
        rows.append(("(no municipality)", str(n_by[None]), str(e_by[None])))
    lines += [*_table(("municipality", "nodes", "endpoints"), rows), ""]
    n_kind, e_kind = Counter(t.kind for t in nodes), Counter(t.kind for t in endpoints)
    rows = [(k, str(n_kind[k]), str(e_kind[k])) for k in sorted(set(n_kind) | set(e_kind))]
    lines += [*_table(("kind", "nodes", "endpoints"), rows), ""]
    c_by = Counter(c.service_class for c in inv.customers.values())
    ce_by = Counter(t.service_class for t in endpoints)
    rows = [(sc, str(c_by[sc]), str(ce_by[sc])) for sc in sorted(set(inv.service_classes) | set(c_by))]
    lines += [*_table(("service class", "customers", "endpoints"), rows), ""]
    for version in ("2c", "3"):
        names = [_level(c) for c in sorted(inv.credentials.values(), key=lambda c: c.name) if c.version == version]
        lines.append(f"credentials v{version}: {', '.join(names) if names else '-'}")
    lines += _tables(inv)
    p = inv.polling
    intervals = Counter(fmt_num(t.polling.interval) for t in inv.targets.values())
    lines += [
        f"polling: default interval {fmt_num(p.interval)} s, {p.icmp_count} pings, down after {p.down_after}, "
        f"up after {p.up_after}; targets by interval: "
        + ", ".join(f"{k} s: {v}" for k, v in sorted(intervals.items(), key=lambda kv: float(kv[0]))),
        f"timeseries: {_timeseries(inv)}",
        *_delivery(inv),
        f"api: {_api(inv)}",
        f"status page: {_status_page(inv)}",
        f"metrics: {inv.daemon.metrics_listen or 'off'}",
        f"state_dir: {inv.daemon.state_dir}",
    ]
    return "\n".join(lines) + "\n"


def _tables(inv: Inventory) -> list[str]:
    """One line when subscriber tables are walked: by how many parents, for how many endpoints."""
    by_profile = Counter(t.snmp.table for t in inv.targets.values() if t.snmp is not None and t.snmp.table)
    if not by_profile:
        return []
    listed = [t for t in inv.targets.values() if t.table_key is not None]
    profiles = ", ".join(f"{name} {n}" for name, n in sorted(by_profile.items()))
    lines = [f"subscriber tables: {sum(by_profile.values())} parents ({profiles}), {len(listed)} endpoints "
             f"identified in them, {sum(not t.address for t in listed)} of those without an address"]
    ports = [t for t in inv.targets.values() if t.kind == PON_PORT_KIND]
    placed = unplaced = 0
    for t in listed:
        parent = inv.targets.get(t.parents[0]) if t.parents else None
        if parent is not None and parent.kind == PON_PORT_KIND:
            placed += 1
        elif parent is not None and parent.snmp is not None and has_ports(parent.snmp.table):
            unplaced += 1  # known by serial alone on an OLT whose table names ports
    if ports or unplaced:
        rest = f", {unplaced} directly under their OLT (serial alone: pon_port places them)" if unplaced else ""
        lines.append(f"PON ports: {len(ports)} port nodes under {len({p.parents[0] for p in ports})} OLTs, "
                     f"{placed} ONUs placed under their port{rest}")
    return lines


def _delivery(inv: Inventory) -> list[str]:
    """Where tickets, alerts and notices go — hosts and counts only, never a secret."""
    d = inv.delivery
    if d is None:
        return ["delivery: off (no delivery section: no tickets, alerts or notices)"]
    desk = d.desk
    where = {"rt": f"RT at {desk.url} (queue {desk.queue})", "email": f"email-to-ticket to {desk.address}",
             "webhook": f"webhook {desk.webhook.url if desk.webhook else ''}", "folder": f"folder {desk.path}",
             "none": "none"}[desk.kind]
    if d.smtp is not None:
        s = d.smtp
        email = f"SMTP {s.host}:{s.port} ({s.security}{', auth' if s.username else ''}, pool {s.pool_size})"
    else:
        email = f"maildir {d.maildir.path}" if d.maildir is not None else "off"
    mqtt = f"{d.mqtt.host}:{d.mqtt.port}{' (TLS)' if d.mqtt.tls else ''}, prefix {d.mqtt.prefix}" if d.mqtt else "off"
    notices = "off" if not d.customers.enabled else \
        f"{'/'.join(d.customers.kinds)} by {'/'.join(d.customers.channels)}"
    return [
        f"delivery: desk {where}; email {email}; mqtt {mqtt}; sms {d.sms.url if d.sms else 'off'}; "
        f"apprise {_apprise(d)}",
        f"technicians: {len(d.technicians)}, on-call rules {len(d.oncall)}, escalation after "
        f"{fmt_num(d.escalation.after / 60)} min (up to tier {d.escalation.max_tier}); customer notices {notices}",
    ]


def _apprise(d: DeliveryConfig) -> str:
    """Counts and services only: an Apprise URL carries its token, so only its scheme is shown."""
    urls = [u for t in d.technicians.values() for u in t.apprise]
    gateway = d.apprise.customers
    if not urls and gateway is None:
        return "off"
    schemes = sorted({u.reveal().split("://", 1)[0] for u in urls})
    techs = sum(1 for t in d.technicians.values() if t.apprise)
    customers = f", customers by {gateway.reveal().split('://', 1)[0]}" if gateway is not None else ""
    return f"{len(urls)} URLs of {techs} technicians ({', '.join(schemes)}){customers}"


def _api(inv: Inventory) -> str:
    a = inv.api
    if a is None or not a.listen:
        return "off" if a is None or not a.links else f"off; ack links to {a.public_url}"
    links = f"; ack links to {a.public_url} valid {fmt_num(a.link_ttl / 3600)} h" if a.links else ""
    return f"{a.listen}{links}"


def _status_page(inv: Inventory) -> str:
    p = inv.status_page
    if p is None or not p.listen:
        return "off"
    check = "number + last 4 phone digits" if p.lookup_check == "phone" else "number only"
    return f"http://{p.listen}/ (lookup: {check}, {p.lookup_per_minute}/min per client; times in {p.timezone})"


def _timeseries(inv: Inventory) -> str:
    ts = inv.timeseries
    if ts.kind == "none":
        return "none (time series off)"
    where = f"bucket {ts.bucket}, org {ts.org}" if ts.kind == "influxdb2" else f"database {ts.database}"
    return f"{ts.kind} at {ts.url} ({where})"
