"""Delivery of ``degraded`` incidents for weak levels (issue 17): technicians only, never customers.

An ONU whose optical rx power drifted below the threshold, or a station whose signal or CCQ fell,
still has service: the engine opens one ``degraded`` incident per PON port or AP listing them and
their values (its detail begins "weak levels below "). The desk gets one informational ticket, the
first on call one informational message (no ack link, no phone, no escalation); customers are never
told, even where ``customers.kinds`` lists ``degraded`` for a lossy link's "degraded service".
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from monitor.correlate.incidents import IncidentEvent
from monitor.delivery import planner
from monitor.notify.render import Renderer
from tests.delivery_support import T0, base_delivery, ev, ids, load
from tests.test_delivery_planner import Run, by_action, ctx_of

DETAIL = "weak levels below ap-1: cpe-0001 (C-0001) signal -85dBm < -80dBm; cpe-0002 (C-0002) ccq 45% < 60%"


def weak(event: str, ts: float, customers: list[str]) -> IncidentEvent:
    return dataclasses.replace(ev(event, ts, customers, kind="degraded", root="ap-1"),
                               detail=DETAIL if event == "opened" else "")


def test_weak_levels_are_one_informational_ticket_and_message_and_never_a_customer_notice(tmp_path: Path) -> None:
    inv = load(tmp_path, delivery=base_delivery(customers={"kinds": ["outage", "suspected", "degraded"]}))
    run = Run(ctx_of(inv))
    items = run.feed(weak("opened", T0, ids(2, 0)))
    acts = by_action(items)
    assert acts["ticket_open"] == 1 and acts["tech_info"] == 1
    assert acts["tech_alert"] == 0 and acts["customer_opened"] == 0
    assert not [i for i in items if i.channel == "apprise"]  # nobody's phone rings for a weak signal
    info = next(i for i in items if i.action == "tech_info")
    assert info.data["ack_url"] == "" and info.data["levels"] is True
    _, body = Renderer().render("technician_alert", "email", info.language, info.data)
    assert "Solo informativo: niveles débiles" in body
    assert "cpe-0001 (C-0001) signal -85dBm < -80dBm" in body  # the customers and their values
    ticket = next(i for i in items if i.action == "ticket_open")
    _, text = Renderer().render("ticket_opened", "ticket", "en", ticket.data)
    assert "For information: weak levels" in text and "ccq 45% < 60%" in text
    # an hour unacknowledged: no escalation; more stations weak: no customer hears of it either
    assert run.tick(T0 + 3600) == []
    acts = by_action(run.feed(weak("updated", T0 + 4000, ids(5, 0))))
    assert acts["customer_opened"] == 0 and acts["customer_updated"] == 0
    acts = by_action(run.feed(weak("resolved", T0 + 9000, ids(5, 0))))
    assert acts["ticket_resolve"] == 1 and acts["tech_resolved"] == 0 and acts["customer_restored"] == 0


def test_the_memory_that_an_incident_is_weak_levels_survives_a_restart(tmp_path: Path) -> None:
    """The detail comes only with "opened": after a restart (memory through JSON, as the service stores
    it) an update must still tell no customer."""
    inv = load(tmp_path, delivery=base_delivery(customers={"kinds": ["outage", "suspected", "degraded"]}))
    run = Run(ctx_of(inv))
    run.feed(weak("opened", T0, ids(2, 0)))
    run.mem = {k: planner.IncidentMemory.from_dict(json.loads(json.dumps(m.to_dict()))) for k, m in run.mem.items()}
    assert by_action(run.feed(weak("updated", T0 + 600, ids(8, 0))))["customer_opened"] == 0


def test_a_lossy_links_degraded_incident_still_tells_customers_when_configured(tmp_path: Path) -> None:
    """The other ``degraded`` (rain fade on a link: customers flicker) keeps its crew alert and its
    "degraded service" notices."""
    inv = load(tmp_path, delivery=base_delivery(customers={"kinds": ["outage", "suspected", "degraded"]}))
    run = Run(ctx_of(inv))
    lossy = dataclasses.replace(ev("opened", T0, ids(2, 0), kind="degraded", root="ap-1"),
                                detail="lossy link: ap-1 answering with loss 60% > 20% since 2026-11-18T11:06:00Z")
    acts = by_action(run.feed(lossy))
    assert acts["tech_alert"] == 1 and acts["customer_opened"] == 2 and acts["tech_info"] == 0
