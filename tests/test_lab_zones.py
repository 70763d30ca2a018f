"""The namespace lab with remote pollers in three zones (issue 14): two zones of one poller, one of two.

The core polls the NOC's zone; ``p-ap1`` and ``p-ap2`` each poll an AP and its customers from a
machine hanging off that AP; ``p-town`` (on a machine at tower-2, behind its backhaul) and ``p-noc``
(in the NOC) both poll Saravena. Real mosquitto between them, real SMTP and RT behind the core.
Faults: a tower's backhaul cut (a veth down), and a poller's own uplink cut (nftables inside its
machine's namespace: it reaches neither its broker nor its targets). Fixture: tests/lab/zones.py;
docs/lab.md ("Zones and vantage points").
"""

from __future__ import annotations

import time
from email.message import EmailMessage

import pytest

from tests.lab.checks import (
    customer_notice_count,
    cut_until_incident,
    incident_closed_out,
    incident_delivered,
    lifecycle,
    no_customer_incident,
    only_incident,
    timeline,
    wait_resolved,
)
from tests.lab.delivery import TECHNICIANS
from tests.lab.fixtures import IspRun
from tests.lab.zones import ZonesRun, zone_targets, zones_isp  # noqa: F401 - pytest fixture
from tests.servers.common import wait_for

pytestmark = [pytest.mark.root, pytest.mark.servers]
AREA = ["ap-3", "ap-4"]  # behind tower-2
BLIND, BACK = "SIN VISIBILIDAD", "VISIBLE de nuevo"  # the zone alerts' subjects (Spanish templates)


def zone_mails(isp: IspRun, since: float) -> list[EmailMessage]:
    """The blind-zone alerts and their recoveries (``ZONE-<zone>-<start>``) of episodes begun since ``since``."""
    assert isp.receivers is not None, "the lab's daemon delivers"
    out = []
    for m in isp.receivers.smtp.messages():
        ref = str(m["X-Monitor-Incident"] or "")
        if ref.startswith("ZONE-") and int(ref.rsplit("-", 1)[1]) >= int(since):
            out.append(m)
    return out


def alerts(isp: IspRun, since: float) -> set[tuple[str, str, str]]:
    """(zone, recipient, BLIND or BACK) of the zone alerts since ``since``, each once however often sent."""
    out = set()
    for m in zone_mails(isp, since):
        zone = str(m["X-Monitor-Incident"]).split("-")[1]
        kind = BLIND if BLIND in str(m["Subject"]) else BACK if BACK in str(m["Subject"]) else str(m["Subject"])
        out.add((zone, str(m["To"]), kind))
    return out


def log_lines(z: ZonesRun, msg: str, **fields: str) -> int:
    """Lines of the core's log with that message and those key=value fields."""
    want = [f'msg="{msg}"', *(f"{k}={v}" for k, v in fields.items())]
    return sum(1 for line in z.log().splitlines() if all(w in line for w in want))


def saw_all_down(z: ZonesRun, poller: str, since: float) -> bool:
    """The poller's own event store has every target of its zone confirmed DOWN since ``since``."""
    p = z.pollers[poller]
    down = {c.target for c in p.changes(since) if c.new.value == "down"}
    return down >= set(zone_targets(z.run.lab, p.zone))


def handed_over(z: ZonesRun, timeout: float = 120.0) -> None:
    """Every poller's spool empty: the core has stored (and acknowledged) everything they confirmed."""
    try:
        wait_for(lambda: all(p.backlog() == 0 for p in z.pollers.values()), timeout, "every poller's spool empty")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {[(n, p.backlog()) for n, p in z.pollers.items()]}\n"
                             f"{z.run.daemon.log_tail()}") from exc


def test_tower_cut_in_a_zone_of_two_pollers_is_one_outage_as_without_pollers(zones_isp: ZonesRun) -> None:  # noqa: F811
    z, isp = zones_isp, zones_isp.run
    start = isp.reset()
    silent = log_lines(z, "poller silent, its view set aside", poller="p-town")
    blind = log_lines(z, "zone blind: none of its pollers heard, its targets are unknown", zone="saravena")
    # The town's poller is behind the cut backhaul: silent, set aside; the NOC's sees the tower down.
    row, customers = cut_until_incident(isp, start, "t2", "outage", "tower-2", AREA, "tower cut, two pollers")
    isp.latencies[-1].update(incident_delivered(isp, row, customers))
    assert log_lines(z, "poller silent, its view set aside", poller="p-town") > silent
    down = [c for c in isp.observe.changes(start) if c.target == "tower-2" and c.new.value == "down"]
    assert len(down) == 1 and "p-noc" in down[0].reason and "p-town (silent)" in down[0].reason, down
    isp.lab.restore("t2")
    row = wait_resolved(isp, row.id, timeout=60)
    only_incident(isp, start, row.id)
    assert lifecycle(isp, row.id).count("opened") == 1
    incident_closed_out(isp, row, customers)
    handed_over(z)
    # the zone was never blind: the NOC's poller was heard all along
    assert alerts(isp, start) == set()
    assert log_lines(z, "zone blind: none of its pollers heard, its targets are unknown", zone="saravena") == blind


def test_a_pollers_own_uplink_cut_is_a_blind_alert_for_its_zone_only(zones_isp: ZonesRun) -> None:  # noqa: F811
    z, isp = zones_isp, zones_isp.run
    start = isp.reset()
    notices = customer_notice_count(isp)
    blind_lines = log_lines(z, "zone blind: none of its pollers heard, its targets are unknown")
    fault = time.time()
    isp.lab.cut_host("p-ap1")
    tech = TECHNICIANS["arauca"]
    wait_for(lambda: (("ap1", tech, BLIND) in alerts(isp, start)), 60, "the blind alert of zone ap1 to its technician")
    alerted = time.time()
    wait_for(lambda: saw_all_down(z, "p-ap1", start), 60, "p-ap1 confirms its whole zone down (it sees nothing)")
    assert alerts(isp, start) == {("ap1", tech, BLIND)}
    assert log_lines(z, "zone blind: none of its pollers heard, its targets are unknown") == blind_lines + 1
    assert log_lines(z, "zone blind: none of its pollers heard, its targets are unknown", zone="ap1") >= 1
    isp.lab.restore_host("p-ap1")
    healed = time.time()
    wait_for(lambda: (("ap1", tech, BACK) in alerts(isp, start)), 60, "the zone's return alert")
    handed_over(z)
    wait_for(isp.all_up, 60, "every target up again")
    # p-ap1's spool brought its zone all down (at the real times): blind by its vantage node, set aside
    assert log_lines(z, "poller blind, its view set aside", poller="p-ap1") >= 1
    # not one DOWN of its zone in the event log: the CPEs it confirmed before ap-1 were held until
    # ap-1's DOWN made it blind, and those not yet confirmed again after ap-1's return stayed set aside
    zone = set(zone_targets(isp.lab, "ap1"))
    assert not [c for c in isp.observe.changes(start) if c.target in zone and c.new.value == "down"], \
        timeline(isp, start, everything=True)
    no_customer_incident(isp, start)
    assert customer_notice_count(isp) == notices
    assert alerts(isp, start) == {("ap1", tech, BLIND), ("ap1", tech, BACK)}
    isp.latencies.append({"scenario": "a single poller's own uplink cut", "blind_alert_after_cut_s":
                          round(alerted - fault, 3), "cut_s": round(healed - fault, 3),
                          "stored_down_s": stored_down(isp, start, zone_targets(isp.lab, "ap1"))})
    print(isp.latencies[-1])


def stored_down(isp: IspRun, since: float, targets: list[str]) -> dict[str, float]:
    """How long each target stood DOWN in the core's event log since ``since`` (docs/lab.md, Findings:
    a CPE the poller confirmed down before its vantage node, or up after it, is DOWN in between)."""
    out: dict[str, float] = {}
    began: dict[str, float] = {}
    for c in isp.observe.changes(since):
        if c.target not in targets:
            continue
        if c.new.value == "down":
            began[c.target] = c.ts
        elif c.target in began:
            out[c.target] = round(out.get(c.target, 0.0) + c.ts - began.pop(c.target), 3)
    return out


def test_town_pollers_own_uplink_cut_leaves_the_noc_poller_voting(zones_isp: ZonesRun) -> None:  # noqa: F811
    z, isp = zones_isp, zones_isp.run
    start = isp.reset()
    notices = customer_notice_count(isp)
    silent = log_lines(z, "poller silent, its view set aside", poller="p-town")
    blind = log_lines(z, "zone blind: none of its pollers heard, its targets are unknown", zone="saravena")
    isp.lab.cut_host("p-town")
    wait_for(lambda: saw_all_down(z, "p-town", start), 60, "p-town confirms its whole zone down (it sees nothing)")
    wait_for(lambda: log_lines(z, "poller silent, its view set aside", poller="p-town") > silent, 60,
             "the core sets p-town's view aside")
    states = isp.observe.states()
    assert {t: states[t] for t in zone_targets(isp.lab, "saravena")} == dict.fromkeys(
        zone_targets(isp.lab, "saravena"), "up")
    isp.lab.restore_host("p-town")
    handed_over(z)
    wait_for(isp.all_up, 60, "every target up")
    wait_for(lambda: not any("p-town" in p for p in _aside(z)), 60, "p-town counts again")
    # its spool brought its all-down view late: set aside (catching up, then blind), never a DOWN
    assert not [c for c in isp.observe.changes(start) if c.new.value != "up"], timeline(isp, start, everything=True)
    no_customer_incident(isp, start)
    assert customer_notice_count(isp) == notices
    assert alerts(isp, start) == set()
    assert log_lines(z, "zone blind: none of its pollers heard, its targets are unknown", zone="saravena") == blind


def _aside(z: ZonesRun) -> list[str]:
    """Pollers whose view the core's log last said was set aside (silent or blind) and not back since."""
    out: dict[tuple[str, str], bool] = {}
    for line in z.log().splitlines():
        for msg, why, aside in (("poller silent, its view set aside", "silent", True),
                                ("poller heard again", "silent", False),
                                ("poller blind, its view set aside", "blind", True),
                                ("poller sees its zone again", "blind", False)):
            if f'msg="{msg}"' in line:
                poller = next((w.split("=", 1)[1] for w in line.split() if w.startswith("poller=")), "")
                out[poller, why] = aside
    return [f"{p} ({why})" for (p, why), aside in out.items() if aside]
