"""Delivery of ``power`` incidents (ONUs' dying gasp, issue 17): who hears of a power cut, and of one
customer's own power.

A power cut in an area is no fibre fault: the desk gets one informational ticket, the first on call
one informational message (no ack link, no phone, no escalation: nobody is sent out), customers a
short "power cut in your area" notice only if ``customers.kinds`` lists ``power``. One ONU's dying
gasp (a ``power`` incident rooted at the endpoint) is its customer's own power: no ticket unless the
customer's service class has ``ticket_power``, never a technician message nor a customer notice.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from monitor.inventory.loader import load_inventory
from monitor.notify.render import Renderer
from tests.delivery_support import T0, base_delivery, ev, ids, load, write_config
from tests.test_delivery_planner import Run, by_action, ctx_of


def test_a_power_cut_is_one_informational_ticket_and_message_and_never_escalates(tmp_path: Path) -> None:
    run = Run(ctx_of(load(tmp_path)))
    items = run.feed(ev("opened", T0, ids(12, 0), kind="power", root="ap-1"))
    acts = by_action(items)
    assert acts["ticket_open"] == 1 and acts["tech_info"] == 1
    assert acts["tech_alert"] == 0 and acts["customer_opened"] == 0  # no crew; customers: not configured
    assert not [i for i in items if i.channel == "apprise"]  # nobody's phone rings for a blackout
    info = next(i for i in items if i.action == "tech_info")
    assert info.recipient == "juan@isp.example" and info.data["ack_url"] == ""
    _, body = Renderer().render("technician_alert", "email", info.language, info.data)
    assert "Solo informativo" in body and "no requiere cuadrilla" in body
    ticket = next(i for i in items if i.action == "ticket_open")
    subject, text = Renderer().render("ticket_opened", "ticket", "es", ticket.data)
    assert "CORTE DE ENERGÍA" in subject and "Informativo: corte de energía eléctrica" in text
    # nobody acknowledges: still no escalation, no phone, an hour later
    assert run.tick(T0 + 3600) == []
    acts = by_action(run.feed(ev("resolved", T0 + 4000, ids(12, 0), kind="power", root="ap-1")))
    assert acts["ticket_resolve"] == 1 and acts["tech_resolved"] == 0 and acts["customer_restored"] == 0


def test_a_power_cut_whose_node_goes_down_alerts_the_crew(tmp_path: Path) -> None:
    """The OLT's own battery runs out: the same incident becomes an outage, and the crew is alerted."""
    run = Run(ctx_of(load(tmp_path)))
    run.feed(ev("opened", T0, ids(12, 0), kind="power", root="ap-1"))
    acts = by_action(run.feed(ev("updated", T0 + 900, ids(12, 0), kind="outage", root="ap-1")))
    assert acts["tech_alert"] == 1 and acts["ticket_comment"] == 1 and acts["ticket_open"] == 0


def test_customers_get_the_short_power_cut_notice_only_when_configured(tmp_path: Path) -> None:
    inv = load(tmp_path, delivery=base_delivery(customers={"kinds": ["outage", "suspected", "power"]}))
    run = Run(ctx_of(inv))
    items = run.feed(ev("opened", T0, ids(2, 0), kind="power", root="ap-1"))
    notices = {i.recipient: i for i in items if i.action == "customer_opened" and i.channel == "email"}
    assert set(notices) == {"c1@example.com", "c2@example.com"}
    renderer = Renderer()
    subject_es, es = renderer.render("customer_opened", "email", "es", notices["c1@example.com"].data)
    subject_en, en = renderer.render("customer_opened", "email", "en", notices["c2@example.com"].data)
    assert "Corte de energía" in subject_es and "vuelve cuando regrese la luz" in es and "Detectamos" not in es
    assert "Power cut" in subject_en and "returns with the power" in en and "outage" not in subject_en
    _, short = renderer.render("customer_opened", "sms", "es", notices["c1@example.com"].data)
    assert short.strip() == ("ISP: corte de luz en su zona (Arauca) desde 2026-11-18 06:06 (hora de Colombia). El"
                             " servicio vuelve con la luz. Ref INC-000001")


@pytest.mark.parametrize("ticket_power", [False, True])
def test_one_onus_dying_gasp_is_its_customers_own_power(tmp_path: Path, ticket_power: bool) -> None:
    """No ticket unless the service class asks for one; never a technician nor a customer notice (even
    with ``power`` in ``customers.kinds``: "a power cut in your area" would be wrong)."""
    inv = load(tmp_path, delivery=base_delivery(customers={"kinds": ["outage", "suspected", "power"]}))
    classes = dict(inv.service_classes)
    classes["residencial"] = dataclasses.replace(classes["residencial"], ticket_power=ticket_power)
    run = Run(ctx_of(dataclasses.replace(inv, service_classes=classes)))
    items = run.feed(ev("opened", T0, ["C-0007"], kind="power", root="cpe-0007"))
    acts = by_action(items)
    assert acts["ticket_open"] == (1 if ticket_power else 0)
    assert acts["tech_alert"] == 0 and acts["tech_info"] == 0 and acts["customer_opened"] == 0
    # a corporate customer's own power, without ticket_power in its class: nothing either
    assert by_action(run.feed(ev("opened", T0, ["C-0001"], kind="power", root="cpe-0001",
                                 incident="INC-000002")))["ticket_open"] == 0


def test_ticket_power_is_a_strict_boolean_of_the_service_class(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    text = path.read_text()
    assert "ticket_single: true\n" in text
    path.write_text(text.replace("ticket_single: true\n", "ticket_single: true\n    ticket_power: maybe\n", 1))
    from monitor.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        load_inventory(path, secrets=False)
    line = next(n for n, s in enumerate(path.read_text().splitlines(), 1) if "ticket_power" in s)
    assert f"sites.yaml:{line}: service_classes.dedicado.ticket_power: expected a boolean (true or false), " \
           "got a string" in str(exc.value)
    path.write_text(text.replace("ticket_single: true\n", "ticket_single: true\n    ticket_power: true\n", 1))
    assert load_inventory(path, secrets=False).service_classes["dedicado"].ticket_power is True
