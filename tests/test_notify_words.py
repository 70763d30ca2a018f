"""Notice, alert and ticket wording: every incident kind reads in the reader's language (issue 18).

The data comes from the real planner (the same dicts the delivery service renders); every builtin
template is rendered for every incident kind, and a Spanish text must not carry an English kind
name ("ALERTA outage", "Tipo: outage").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from monitor.correlate.incidents import KINDS
from monitor.delivery.planner import GlobalMemory, Item, plan_maintenance, plan_staff
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory
from monitor.notify.gsm import parts, to_gsm7
from monitor.notify.render import BUILTIN, Renderer
from monitor.zones import PLACES
from tests.delivery_support import SECRETS, T0, ev, ids, load, write_config
from tests.test_delivery_planner import Run, ctx_of, staff_action, window
from tests.test_delivery_zones import zone_items

ENGLISH_KINDS = re.compile(r"\b(" + "|".join(KINDS) + r")\b", re.IGNORECASE)


def _samples(inv: Inventory) -> dict[str, dict[str, Any]]:
    """One planned item's data per template, from a real incident's life and a maintenance window."""
    run = Run(ctx_of(inv))
    items: list[Item] = []
    items += run.feed(ev("opened", T0, ids(4, 0)))
    items += run.tick(T0 + 600, etas={"INC-000001": T0 + 7200})       # desk comment, customer update
    items += run.tick(T0 + 900)                                        # escalation
    items += plan_staff([staff_action(1, "ack", "ana", "voy en camino")], run.mem, run.glob, run.ctx).items
    items += run.feed(ev("resolved", T0 + 1200, ids(4, 0)))
    items += run.feed(ev("opened", T0 + 1800, ids(4, 0), incident="INC-000002"))   # reopened ticket
    glob, ctx = GlobalMemory(), ctx_of(inv)
    w = [window(1, "ap-1", T0 + 86400, T0 + 90000, "cambio de radio")]
    for now in (T0, T0 + 86400, T0 + 90000):
        items += plan_maintenance(w, [], glob, ctx, now).items
    items += zone_items(inv)  # a remote zone gone blind and back
    out: dict[str, dict[str, Any]] = {}
    for i in items:
        if i.template:
            out.setdefault(i.template, i.data)
    out.setdefault("customer_continues", out["customer_restored"])   # the same data, other words
    return out


def test_every_template_in_spanish_names_every_kind_in_spanish(tmp_path: Path) -> None:
    samples = _samples(load(tmp_path))
    files = sorted(p.name.removesuffix(".j2") for p in (BUILTIN / "es").glob("*.j2") if not p.name.startswith("_"))
    missing = {f.split(".")[0] for f in files} - set(samples)
    assert not missing, f"no sample data for {sorted(missing)}"
    renderer = Renderer()
    for name in files:
        event, channel = name.split(".")
        for kind in KINDS:
            data = {**samples[event], "kind": kind}
            subject, body = renderer.render(event, channel, "es", data)
            leaked = ENGLISH_KINDS.findall(f"{subject}\n{body}")
            assert not leaked, f"es/{name} with kind={kind} says {leaked}:\n{subject}\n{body}"
            renderer.render(event, channel, "en", data)   # English renders too


def test_kind_words_are_spanish_and_english(tmp_path: Path) -> None:
    samples = _samples(load(tmp_path))
    data = samples["technician_alert"]
    renderer = Renderer()
    subject, body = renderer.render("technician_alert", "email", "es", {**data, "kind": "outage"})
    assert subject.startswith("[INC-000001] ALERTA caída:")
    assert "Incidente: INC-000001 (caída)" in body
    subject, _ = renderer.render("technician_alert", "email", "en", {**data, "kind": "degraded"})
    assert subject.startswith("[INC-000001] ALERT degraded link:")
    _, ticket = renderer.render("ticket_opened", "ticket", "es",
                                {**samples["ticket_opened"], "kind": "suspected"})
    assert "Tipo: caída probable" in ticket


def test_the_technician_opening_line_is_natural_spanish(tmp_path: Path) -> None:
    data = _samples(load(tmp_path))["technician_alert"]
    _, body = Renderer().render("technician_alert", "email", "es", data)
    opening = body.splitlines()[0]
    assert opening == f"{data['technician_name']}: usted está de turno en {data['municipality_name']} " \
                      "y hay una falla que necesita su atención."


def test_node_kinds_are_spanish_in_spanish_texts(tmp_path: Path) -> None:
    samples = _samples(load(tmp_path))
    renderer = Renderer()
    _, alert = renderer.render("technician_alert", "email", "es", samples["technician_alert"])
    _, ticket = renderer.render("ticket_opened", "ticket", "es", samples["ticket_opened"])
    assert "Nodo raíz: twr-1 (torre) en Torre Centro" in alert and "(twr-1, torre)" in ticket
    _, alert = renderer.render("technician_alert", "email", "es", {**samples["technician_alert"], "node_kind": "ap"})
    assert "(punto de acceso)" in alert


def _located(tmp_path: Path) -> Inventory:
    """The delivery fixture with coordinates on the tower's site and contacts_in_alerts on the corporate class."""
    path = write_config(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["sites"][0].update(lat=7.0847, lon=-70.7591)
    doc["service_classes"]["corporativo"]["contacts_in_alerts"] = True
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return load_inventory(path, env=SECRETS)


def test_the_alert_lists_the_nodes_below_the_root_where_it_is_and_corporate_contacts(tmp_path: Path) -> None:
    run = Run(ctx_of(_located(tmp_path)))
    items = run.feed(ev("opened", T0, ids(8, 0)))
    alert = next(i for i in items if i.template == "technician_alert" and i.channel == "email")
    ticket = next(i for i in items if i.template == "ticket_opened")
    renderer = Renderer()
    _, es = renderer.render("technician_alert", "email", "es", alert.data)
    _, en = renderer.render("technician_alert", "email", "en", alert.data)
    _, tk = renderer.render("ticket_opened", "ticket", "es", ticket.data)
    assert "Nodos sin respuesta debajo: 1\n  - ap-1 (punto de acceso, Torre Centro)" in es
    assert "Nodes not answering below it: 1\n  - ap-1 (access point, Torre Centro)" in en
    osm = "https://www.openstreetmap.org/?mlat=7.084700&mlon=-70.759100#map=16/7.084700/-70.759100"
    assert f"Ubicación: 7.084700, -70.759100 - {osm}" in es and osm in en and osm in tk
    assert "Nodos sin respuesta debajo: ap-1" in tk
    # corporate customers (C-0001..C-0005) with their numbers; residential ones without
    assert "C-0001 Cliente 1 (corporativo, respuesta 12 h) contacto: +573000000001, c1@example.com" in es
    assert "C-0006 Cliente 6 (residencial, respuesta 24 h)\n" in es and "+573000000006" not in es
    assert "| corporativo | respuesta 12 h | +573000000001, c1@example.com" in tk and "+573000000006" not in tk


def test_without_coordinates_nodes_below_or_the_flag_the_alert_says_nothing_of_them(tmp_path: Path) -> None:
    run = Run(ctx_of(load(tmp_path)))
    items = run.feed(ev("opened", T0, ids(8, 0), root="ap-1"))
    alert = next(i for i in items if i.template == "technician_alert" and i.channel == "email")
    _, es = Renderer().render("technician_alert", "email", "es", alert.data)
    assert "Ubicación" not in es and "Nodos sin respuesta" not in es and "contacto" not in es


def test_every_time_a_text_prints_says_whose_clock_it_is(tmp_path: Path) -> None:
    """Issue 18: local times in notices, alerts and tickets say 'hora de Colombia' / 'Colombia time' (the
    configured zone), not a bare 06:06 or an IANA id; SMS texts too (their length: the test below)."""
    samples = _samples(load(tmp_path))
    renderer = Renderer()
    checked = 0
    for lang, words in (("es", "hora de Colombia"), ("en", "Colombia time")):
        for path in sorted((BUILTIN / lang).glob("*.j2")):
            event, channel = path.name.removesuffix(".j2").split(".") if "." in path.stem else ("", "")
            if channel not in ("email", "ticket", "sms"):
                continue
            for kind in ("outage", "degraded"):
                _, body = renderer.render(event, channel, lang, {**samples[event], "kind": kind})
                if re.search(r"\d{2}:\d{2}", body):
                    assert words in body, f"{lang}/{path.name} ({kind}) prints a time without its zone:\n{body}"
                    assert "America/Bogota" not in body
                    checked += 1
    assert checked >= 2 * 2 * 20   # the templates that print a time, both languages, both kinds
    _, ticket = renderer.render("ticket_opened", "ticket", "es", samples["ticket_opened"])
    assert "Inicio: 2026-11-18 06:06 (hora de Colombia)" in ticket
    assert "Plazo de respuesta (SLA) por clase (hora de Colombia):" in ticket


def test_the_ack_instruction_is_the_link_when_there_is_one_and_the_command_otherwise(tmp_path: Path) -> None:
    """Issue 18: a technician reading on a phone gets the signed link, and only it; a shell command is
    shown only when there is no link (no API or no link key), never both."""
    samples = _samples(load(tmp_path))
    renderer = Renderer()
    url = "https://noc.example/ack/INC-000001?by=juan&exp=1&sig=ab"
    for event in ("technician_alert", "technician_escalation"):
        for lang, link in (("es", "Confirme desde el teléfono"), ("en", "Acknowledge from your phone")):
            _, with_link = renderer.render(event, "email", lang, {**samples[event], "ack_url": url})
            _, without = renderer.render(event, "email", lang, {**samples[event], "ack_url": ""})
            assert f"{link} (" in with_link and url in with_link, f"{lang}/{event}"
            assert "monitor incidents ack" not in with_link, f"{lang}/{event} shows the CLI next to the link"
            assert without.rstrip().endswith("monitor incidents ack INC-000001") and "/ack/" not in without


def test_every_sms_says_whose_clock_and_stays_one_gsm7_message(tmp_path: Path) -> None:
    """Issue 18: an SMS that prints a time says in whose clock ("hora de Colombia"), and every SMS, in
    both languages and for every kind, is still one 160-character GSM-7 message as the gateway sends it."""
    samples = _samples(load(tmp_path))
    renderer = Renderer()
    timed = 0
    for lang, words in (("es", "hora de Colombia"), ("en", "Colombia time")):
        for path in sorted((BUILTIN / lang).glob("*.sms.j2")):
            event = path.name.split(".")[0]
            for kind in KINDS:
                _, body = renderer.render(event, "sms", lang, {**samples[event], "kind": kind})
                text = to_gsm7(body)
                assert parts(text) == 1, f"{lang}/{path.name} ({kind}) is {len(text)} characters:\n{text}"
                if re.search(r"\d{2}:\d{2}", body):
                    assert words in body, f"{lang}/{path.name} ({kind}) prints a time without its zone:\n{body}"
                    timed += 1
    assert timed >= 2 * len(KINDS) * 8   # the 8 SMS templates that print a time, both languages


def test_every_sms_fits_in_every_zone_we_name_and_in_one_we_do_not(tmp_path: Path) -> None:
    """The zone's words vary in length ("hora de República Dominicana"); a zone without a name here is
    "hora local" in an SMS (its id, "hora local (America/St_Johns)", made the longest text two SMS)."""
    samples = _samples(load(tmp_path))
    renderer = Renderer()
    for tz in (*PLACES, "America/St_Johns", "Asia/Kolkata"):
        for lang in ("es", "en"):
            for path in sorted((BUILTIN / lang).glob("*.sms.j2")):
                event = path.name.split(".")[0]
                for kind in KINDS:
                    _, body = renderer.render(event, "sms", lang, {**samples[event], "kind": kind, "timezone": tz})
                    assert parts(to_gsm7(body)) == 1, f"{tz}: {lang}/{path.name} ({kind}): {body}"
                    assert "America/" not in body and "Asia/" not in body
    _, sms = renderer.render("technician_resolved", "sms", "es", {**samples["technician_resolved"],
                                                                  "timezone": "Asia/Kolkata"})
    assert sms.endswith("(hora local).")
