"""Annotation points: numbers-only fields, words as tags, ``open`` tracking the incident's life."""

from __future__ import annotations

from monitor.correlate.incidents import KINDS, IncidentEvent
from monitor.inventory.model import Target
from monitor.state import State, StateChange
from monitor.tsdb import to_line_protocol
from monitor.tsdb.annotations import KIND_CODES, incident_point, incident_points, site_points, state_change_points
from tests.report_support import inventory

AP = Target("ap1", "ap", "node", "127.0.0.2", site="s1", municipality="arauca")


def test_incident_point_is_open_until_resolved_or_merged() -> None:
    opened = incident_point(IncidentEvent(1.5, "opened", "INC-000007", "suspected", "ap1", ("cpe1", "cpe2"),
                                          ("C1",), ("ap1",)), AP)
    assert opened.measurement == "incident"
    assert dict(opened.tags) == {"incident": "INC-000007", "kind": "suspected", "event": "opened", "root": "ap1",
                                 "site": "s1", "municipality": "arauca"}
    assert dict(opened.fields) == {"open": 1, "affected_endpoints": 2, "affected_customers": 1, "affected_nodes": 1,
                                   "event_code": 1, "kind_code": 1}
    assert opened.time_ns == 1_500_000_000
    for event in ("resolved", "merged"):
        [closed] = incident_points([IncidentEvent(2.0, event, "INC-000007", "outage", "gone", (), ())], inventory())
        assert dict(closed.fields)["open"] == 0 and "site" not in dict(closed.tags)


def test_state_change_and_site_points() -> None:
    changes = [StateChange(t, State.UP, State.DOWN, 10.0, "3 failed polls") for t in ("ap1", "gone")]
    [p] = state_change_points(changes, inventory())  # "gone" is not in the inventory
    assert dict(p.tags)["old"] == "up" and dict(p.tags)["new"] == "down" and dict(p.tags)["site"] == "s1"
    assert dict(p.fields) == {"state": 0, "old_state": 1}
    sites = site_points(inventory(), 0.0)
    assert [dict(s.tags)["site"] for s in sites] == ["s1"]  # s2 has no coordinates
    line = to_line_protocol(sites).decode()
    assert "site,municipality=arauca,name=Torre\\ Centro,site=s1 lat=7.08,lon=-70.76" in line


def test_every_incident_kind_has_its_code() -> None:
    """A kind without a code made every annotation of its incidents fail (a power cut's, issue 17)."""
    assert set(KIND_CODES) == set(KINDS)
    assert len(set(KIND_CODES.values())) == len(KIND_CODES)
