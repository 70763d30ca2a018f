"""The public status page over a real store and a real aiohttp server on loopback: pages, feeds, JSON,
languages, the cache, the figures (the same as ``monitor report``) and the absence of customer data."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import aiohttp
import pytest

from monitor.clock import ManualClock
from monitor.correlate.store import IncidentStore
from monitor.inventory.model import Inventory
from monitor.report.compute import compute
from monitor.report.source import load_input
from monitor.web import server as server_module
from monitor.web.availability import period_for
from monitor.web.server import StatusServer
from monitor.web.snapshot import Snapshot, build
from tests.servers.common import until
from tests.web_support import DAY, Network, example

NOW = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC
INC = "INC-000003"  # the open outage of ap-centro-1 (1: planned on ap-brisas-1, 2: three days ago)


@dataclass
class Site:
    server: StatusServer
    clock: ManualClock
    inv: Inventory
    db: Path
    base: str
    http: aiohttp.ClientSession

    async def get(self, path: str, **headers: str) -> tuple[int, str, dict[str, str]]:
        async with self.http.get(self.base + path, headers=headers) as r:
            return r.status, await r.text(), dict(r.headers)

    def store(self) -> IncidentStore:
        return IncidentStore(self.db)


async def serve(tmp_path: Path, inv: Inventory, script: str = "outage") -> AsyncIterator[Site]:
    """Twenty days of history: an hour's outage of ap-centro-1 three days ago, one open now (``outage``),
    a maintenance window on ap-brisas-1 tomorrow, and a window with ap-saravena-... down inside it."""
    db = tmp_path / "monitor.db"
    net = Network(db, inv, NOW - 20 * DAY)
    store = IncidentStore(db)
    store.add_window("ap-brisas-1", NOW - 10 * DAY, NOW - 10 * DAY + 7200, "cambio de radio", "noc", [],
                     now=NOW - 11 * DAY)
    store.close()
    net.down("ap-brisas-1", NOW - 10 * DAY + 1800)  # inside the window: planned, not downtime
    net.up("ap-brisas-1", NOW - 10 * DAY + 5400)
    net.down("ap-centro-1", NOW - 3 * DAY)
    net.up("ap-centro-1", NOW - 3 * DAY + 3600)
    if script == "outage":
        net.down("ap-centro-1", NOW - 900)
    net.close()
    store = IncidentStore(db)
    brisas = [t.customer for t in inv.targets.values() if t.customer and "ap-brisas-1" in t.parents]
    store.add_window("ap-brisas-1", NOW + DAY, NOW + DAY + 7200, "cambio de antena", "noc", brisas, now=NOW - 60)
    store.close()
    clock = ManualClock(NOW)
    server = StatusServer.for_inventory(inv, db, clock)
    assert server is not None and inv.status_page is not None
    await server.start()
    await server._update_bars()
    try:
        async with aiohttp.ClientSession() as http:
            yield Site(server, clock, inv, db, f"http://{inv.status_page.listen}", http)
    finally:
        await server.stop()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async for s in serve(tmp_path, example()):
        yield s


async def test_company_page_in_spanish_by_default_and_english_by_accept_language(site: Site) -> None:
    status, html, headers = await site.get("/")
    assert status == 200 and headers["Content-Language"] == "es" and "Accept-Language" in headers["Vary"]
    assert '<html lang="es">' in html and "Corte de servicio" in html and "Arauca (Torre Centro)" in html
    assert "Mantenimiento programado" in html and "cambio de antena" in html and "Próximo" in html
    assert "<script" not in html and "style=" not in html  # no JavaScript, no inline style (CSP)
    assert "Content-Security-Policy" in headers and "script-src" not in headers["Content-Security-Policy"]
    status, html, headers = await site.get("/", **{"Accept-Language": "en-GB,en;q=0.9,es;q=0.5"})
    assert headers["Content-Language"] == "en" and "Service outage" in html and "Upcoming" in html
    _, html, headers = await site.get("/?lang=es", **{"Accept-Language": "en"})  # the switch wins
    assert headers["Content-Language"] == "es" and 'href="?lang=en"' in html


async def test_municipality_pages_show_only_their_own_incidents(site: Site) -> None:
    _, arauca, _ = await site.get("/m/arauca")
    _, tame, _ = await site.get("/m/tame?lang=en")
    assert "Corte de servicio" in arauca and "Estado del servicio: Arauca" in arauca
    assert "Everything is working normally." in tame and "No incidents right now." in tame
    assert "Service outage" not in tame
    status, html, _ = await site.get("/m/atlantis")
    assert status == 404 and "Página no encontrada" in html


async def test_json_and_atom_per_page(site: Site) -> None:
    _, text, headers = await site.get("/status.json?lang=en")
    assert headers["Content-Type"].startswith("application/json")
    doc = json.loads(text)
    assert doc["status"] == "incident"
    [inc] = doc["incidents"]
    assert inc["ref"] == INC and inc["kind_text"] == "Service outage" and inc["municipalities"] == ["arauca"]
    assert inc["customers_affected"] == 4 and inc["eta"] is None
    assert [w["state"] for w in doc["maintenance"]] == ["upcoming"]
    assert len(doc["availability"]["company"]["days"]) == 90 and set(doc["availability"]) == {
        "company", *site.inv.municipalities}
    _, text, _ = await site.get("/m/tame/status.json")
    assert json.loads(text)["status"] == "ok" and list(json.loads(text)["availability"]) == ["tame"]
    _, text, headers = await site.get("/feed.atom")
    assert headers["Content-Type"].startswith("application/atom+xml")
    feed = ElementTree.fromstring(text)
    ns = {"a": "http://www.w3.org/2005/Atom"}
    ids = [e.findtext("a:id", namespaces=ns) for e in feed.findall("a:entry", ns)]
    assert ids == [f"urn:isp-monitor:incident:{INC}", "urn:isp-monitor:maintenance:MW-2"]


async def test_an_eta_appears_after_the_refresh_and_the_page_is_rendered_once_meanwhile(site: Site) -> None:
    pages = await asyncio.gather(*(site.get("/") for _ in range(50)))  # at the same moment
    assert len({html for _, html, _ in pages}) == 1
    renders = site.server.cache.renders if site.server.cache else 0
    assert renders == 1  # fifty visitors, one rendering (the others waited for it)
    store = site.store()
    store.add_action(INC, "eta", "noc", "2026-09-21T18:00:00Z", NOW + 1)
    store.close()
    site.clock.advance(1.0)
    assert not await site.server.refresh()  # at most every `refresh` (2 s)
    site.clock.advance(1.0)
    assert await site.server.refresh()
    _, html, _ = await site.get("/")
    assert "21 sep 2026 18:00" in html and "Restablecimiento estimado: 21 sep 2026 18:00" in html
    site.clock.advance(5.0)
    assert not await site.server.refresh()  # nothing changed: nothing rebuilt


async def test_availability_bars_are_the_report_figures(site: Site) -> None:
    """Same period, same store: the page's per-municipality figures equal ``monitor report``'s rows; the
    hour ap-brisas-1 was down inside its window is not downtime; days before the history are unknown."""
    _, text, _ = await site.get("/status.json")
    avail = json.loads(text)["availability"]
    period = period_for(NOW, "UTC", 90)
    report = compute(load_input(site.db, site.inv, period, until=NOW), "municipality")
    for row in report.rows:
        if row.key in avail:
            assert avail[row.key]["availability_pct"] == pytest.approx(row.figures.availability, abs=1e-4)
    assert avail["company"]["availability_pct"] == pytest.approx(report.totals.availability, abs=1e-4)
    days = avail["arauca"]["days"]
    assert days[0]["start"] == "2026-06-24T00:00:00Z" and days[-1]["start"] == "2026-09-21T00:00:00Z"
    assert days[0]["availability_pct"] is None and days[68]["availability_pct"] is None  # before the history
    assert days[69]["availability_pct"] == 100.0  # 1 September, from 14:13 on
    brisas_day = next(d for d in days if d["start"] == "2026-09-11T00:00:00Z")
    assert brisas_day["availability_pct"] == 100.0  # maintenance excluded the same way
    outage_day = next(d for d in days if d["start"] == "2026-09-18T00:00:00Z")
    assert outage_day["availability_pct"] < 100.0


def private_strings(inv: Inventory) -> set[str]:
    """Everything about a customer the public must not see: name, id, e-mail, phone, endpoint id and address."""
    out: set[str] = set()
    for c in inv.customers.values():
        out |= {c.id, c.name, *(x for x in (c.email, c.phone) if x)}
        for e in c.endpoints:
            out |= {e, inv.targets[e].address}
    for t in inv.targets.values():
        if t.role == "endpoint":
            out |= {t.id, t.address, *([t.name] if t.name else [])}
    return out


async def test_no_customer_data_on_any_public_page_feed_or_summary(site: Site) -> None:
    secret = private_strings(site.inv)
    assert len(secret) > 100  # the example's customers.csv is in
    store = site.store()
    store.add_action(INC, "note", "noc", "María Rojas Cárdenas llamó", NOW + 1)  # staff notes stay internal
    store.close()
    site.clock.advance(5)
    await site.server.refresh()
    pages = ["/", *(f"/m/{m}" for m in site.inv.municipalities)]
    bodies = []
    for page in pages:
        for suffix in ("", "/feed.atom", "/status.json"):
            for lang in ("es", "en"):
                path = (page.rstrip("/") + suffix or "/") + f"?lang={lang}"
                status, body, _ = await site.get(path)
                assert status == 200, path
                bodies.append((path, body))
    bodies.append(("/lookup", (await site.get("/lookup"))[1]))
    assert any("Corte de servicio" in b for _, b in bodies)
    for path, body in bodies:
        low = body.lower()
        found = sorted(s for s in secret if s.lower() in low)
        assert not found, f"{path} shows {found[:5]}"


async def test_a_reload_during_a_rebuild_reaches_the_page_on_the_next_refresh(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's SIGHUP can land while a snapshot is being built from the old inventory (a loaded
    machine makes that build slow): the next refresh builds again with the new names instead of taking
    the store's unchanged signature for up to date, which left the old names up for a minute."""
    entered, release = threading.Event(), threading.Event()

    def slow_build(*args: Any) -> Snapshot:
        entered.set()
        release.wait(60)
        return build(*args)

    monkeypatch.setattr(server_module, "build", slow_build)
    site.clock.advance(61.0)  # a minute old: rebuilt although the store did not change
    rebuilding = asyncio.create_task(site.server.refresh())
    await until(entered.is_set, 30, "the rebuild to start")
    tame = site.inv.municipalities["tame"]
    renamed = dataclasses.replace(site.inv, municipalities={
        **site.inv.municipalities, "tame": dataclasses.replace(tame, name="Tame Renombrado")})
    site.server.set_inventory(renamed)
    release.set()
    assert await rebuilding
    site.clock.advance(2.0)
    assert await site.server.refresh()  # the store is unchanged, the inventory is not
    _, html, _ = await site.get("/m/tame?lang=en")
    assert "Tame Renombrado" in html
