"""Power incidents on the public status page (issue 17): a power cut in an area is shown as outages are,
in the page's words ("Corte de energía eléctrica en la zona"), to the customers it touches in the
lookup too; one ONU's dying gasp (a ``power`` incident rooted at the endpoint) is its customer's own
power and stays off the page, like a ``single``."""

from __future__ import annotations

from monitor.correlate.store import IncidentRow
from monitor.web.config import StatusPageSettings
from monitor.web.render import Page, Renderer
from monitor.web.snapshot import StoreRows, build
from tests.web_support import example

NOW = 1_790_000_000.0
OLT, ONU = "olt-arauca", "onu-0002-palacio"


def row(ident: str, root: str, closed: float | None = None) -> IncidentRow:
    return IncidentRow(ident, "power", root, "open" if closed is None else "resolved", NOW - 600, NOW - 600,
                       closed, closed, None, None, None, 1, 1)


def opened(root: str, endpoints: list[str], customers: list[str]) -> list[dict[str, object]]:
    return [{"event": "opened", "ts": NOW - 600, "kind": "power", "affected_endpoints": endpoints,
             "affected_nodes": [], "affected_customers": customers}]


def test_an_area_power_cut_is_public_and_one_customers_own_power_is_not() -> None:
    inv = example()
    onu = inv.targets[ONU]
    assert onu.customer is not None and OLT in onu.parents
    events = {"INC-000001": opened(OLT, [ONU], [onu.customer]), "INC-000002": opened(ONU, [ONU], [onu.customer]),
              "INC-000003": opened(OLT, [ONU], [onu.customer]), "INC-000004": opened(ONU, [ONU], [onu.customer])}
    rows = StoreRows(open=[row("INC-000001", OLT), row("INC-000002", ONU)],
                     resolved=[row("INC-000003", OLT, NOW - 60), row("INC-000004", ONU, NOW - 60)],
                     events=events, actions={}, windows=[])
    snap = build(inv, rows, NOW)
    assert [i.ref for i in snap.incidents] == ["INC-000001"] and snap.incidents[0].kind == "power"
    assert [i.ref for i in snap.resolved] == ["INC-000003"]
    assert [i.ref for i in snap.by_customer[onu.customer]] == ["INC-000001"]
    assert snap.incidents[0].municipalities == (onu.municipality,)
    renderer = Renderer(StatusPageSettings(title="Llanos Net"))
    es = renderer.html(inv, snap, {}, Page(None), "es")
    en = renderer.html(inv, snap, {}, Page(None), "en")
    assert "Corte de energía eléctrica en la zona" in es and "INC-000002" not in es
    assert "Mains power cut in the area" in en


def test_weak_levels_stay_off_the_public_page_a_lossy_link_does_not() -> None:
    """A ``degraded`` incident for weak levels (basis ``levels``: an ONU's optical power below the
    threshold, its customer still served) is for technicians: not on the page nor in the lookup, open or
    resolved. A lossy link's ``degraded`` incident (customers flickering) stays public."""
    import dataclasses

    inv = example()
    onu = inv.targets[ONU]
    assert onu.customer is not None

    def degraded(ident: str, closed: float | None = None, *, levels: bool) -> IncidentRow:
        return dataclasses.replace(row(ident, OLT, closed), kind="degraded", levels=levels)

    events = {i: [{**e, "kind": "degraded"} for e in opened(OLT, [ONU], [onu.customer])]
              for i in ("INC-000001", "INC-000002", "INC-000003")}
    rows = StoreRows(open=[degraded("INC-000001", levels=True), degraded("INC-000002", levels=False)],
                     resolved=[degraded("INC-000003", NOW - 60, levels=True)], events=events, actions={}, windows=[])
    snap = build(inv, rows, NOW)
    assert [i.ref for i in snap.incidents] == ["INC-000002"] and snap.resolved == ()
    assert [i.ref for i in snap.by_customer[onu.customer]] == ["INC-000002"]
