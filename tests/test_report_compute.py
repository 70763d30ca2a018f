"""Report figures against hand-computed numbers, one edge case per test (pure computation)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from monitor.inventory.model import Target
from monitor.report.compute import compute
from monitor.report.model import Figures, IncidentRecord, Interval, Period, Report, ReportInput
from monitor.report.render import to_csv, to_markdown
from tests.report_support import MONTH_MIN, OCT, OCTOBER, SEPTEMBER, at, inventory, up_all_month

ALL = ("core", "ap1", "cpe1", "cpe2", "cpe3", "twr2")
MIN = 60.0


def run(history: dict[str, list[tuple[float, str]]], by: str = "municipality", period: Period = OCTOBER,
        **kw: Any) -> Report:
    return compute(ReportInput(period=period, inventory=inventory(), history=history, **kw), by)


def row(report: Report, key: str) -> Figures:
    return next(r.figures for r in report.rows if r.key == key)


def test_one_hour_down_in_a_month() -> None:
    h = up_all_month(*ALL)
    h["cpe1"] += [(at(10, 8), "down"), (at(10, 9), "up")]
    r = run(h, by="node")
    cpe1 = row(r, "cpe1")
    assert cpe1.down_s == 60 * MIN
    assert cpe1.availability == pytest.approx(100 * (MONTH_MIN - 60) / MONTH_MIN)
    assert cpe1.failures == 1
    assert cpe1.mttr_min == pytest.approx(60)
    assert cpe1.mtbf_h == pytest.approx((MONTH_MIN - 60) / 60)  # 743 h of uptime per failure
    assert row(r, "core").availability == 100.0
    assert r.totals.targets == 6 and r.totals.down_s == 60 * MIN
    assert r.totals.customer_minutes == pytest.approx(60)
    by_muni = run(h)
    assert row(by_muni, "arauca").availability == pytest.approx(100 * (5 * MONTH_MIN - 60) / (5 * MONTH_MIN))
    assert row(by_muni, "tame").availability == 100.0
    assert [x.key for x in by_muni.worst_sites] == ["s1"]
    assert by_muni.worst_nodes == []  # an endpoint is not a node
    corp = next(s for s in r.sla if s.service_class == "corporativo")
    assert corp.availability == pytest.approx(100 * (2 * MONTH_MIN - 60) / (2 * MONTH_MIN))
    assert corp.compliant and corp.customers == 1 and corp.customers_meeting == 1
    assert r.days[9].down_min == pytest.approx(60)
    assert r.days[9].availability is not None and r.days[9].availability < 100
    assert r.days[0].availability == 100.0


def test_maintenance_is_excluded_for_the_node_and_everything_below() -> None:
    h = up_all_month(*ALL)
    h["cpe1"] += [(at(10, 1), "down"), (at(10, 3), "up")]
    r = run(h, by="node", maintenance={t: [Interval(at(10, 0), at(10, 2))] for t in ("ap1", "cpe1", "cpe2", "cpe3")})
    cpe1 = row(r, "cpe1")
    assert cpe1.maintenance_s == 120 * MIN
    assert cpe1.down_s == 60 * MIN  # only 02:00-03:00 counts
    assert cpe1.up_s == (MONTH_MIN - 180) * MIN
    assert cpe1.availability == pytest.approx(100 * (MONTH_MIN - 180) / (MONTH_MIN - 120))
    assert row(r, "ap1").availability == 100.0 and row(r, "ap1").maintenance_s == 120 * MIN
    assert row(r, "core").maintenance_s == 0


def test_blind_time_is_excluded_everywhere_and_wins_over_maintenance() -> None:
    h = up_all_month(*ALL)
    h["cpe2"] += [(at(5, 10, 30), "down"), (at(5, 12), "up")]
    r = run(h, by="node", blind=[Interval(at(5, 10), at(5, 11))],
            maintenance={"cpe2": [Interval(at(5, 9), at(5, 10, 45))]})
    cpe2 = row(r, "cpe2")
    assert cpe2.blind_s == 60 * MIN
    assert cpe2.maintenance_s == 60 * MIN  # 09:00-10:00; 10:00-10:45 is blind
    assert cpe2.down_s == 60 * MIN  # 11:00-12:00
    assert cpe2.availability == pytest.approx(100 * (MONTH_MIN - 180) / (MONTH_MIN - 120))
    assert r.totals.blind_s == 6 * 60 * MIN


def test_targets_count_only_for_their_lifetime() -> None:
    h = up_all_month("core", "ap1", "cpe1", "cpe3", "twr2")
    h["cpe2"] = [(at(16), "up"), (at(20), "down"), (at(21), "up")]  # added on the 16th
    h["twr2"] += [(at(21), "removed")]  # left the inventory on the 21st
    h["old-ap"] = [(OCT - 86400, "up"), (at(3), "removed")]  # no longer in the inventory at all
    r = run(h, by="node")
    cpe2 = row(r, "cpe2")
    assert cpe2.monitored_s == 16 * 1440 * MIN
    assert cpe2.availability == pytest.approx(100 * 15 / 16)  # 93.75 %, not diluted by 15 days it did not exist
    assert row(r, "twr2").monitored_s == 20 * 1440 * MIN and row(r, "twr2").availability == 100.0
    assert row(r, "old-ap").monitored_s == 2 * 1440 * MIN
    res = next(s for s in r.sla if s.service_class == "residencial")
    assert res.availability == pytest.approx(93.75) and res.compliant is False
    muni = run(h)
    assert row(muni, "tame").up_s == 20 * 1440 * MIN
    assert row(muni, "-").targets == 1  # old-ap: counted, under no municipality
    measured = 4 * MONTH_MIN + 16 * 1440
    assert row(muni, "arauca").availability == pytest.approx(100 * (measured - 1440) / measured)


def test_down_episode_and_incident_crossing_the_month_boundary_are_split() -> None:
    sep30_23 = OCT - 3600
    inc = IncidentRecord("INC-000001", "single", "cpe1", sep30_23, OCT + 3600, targets=("cpe1",), customers=("C1",),
                         acked_at=sep30_23 + 600)
    october = up_all_month(*ALL)
    october["cpe1"] = [(sep30_23, "down"), (OCT + 3600, "up")]
    september = {t: [(OCT - 40 * 86400, "up")] for t in ALL}
    september["cpe1"] = [(OCT - 40 * 86400, "up"), (sep30_23, "down"), (OCT + 3600, "up")]
    for period, hist in ((OCTOBER, october), (SEPTEMBER, september)):
        r = run(hist, by="node", period=period, incidents=[inc])
        cpe1 = row(r, "cpe1")
        assert cpe1.down_s == 60 * MIN and cpe1.failures == 1, period.label
        assert cpe1.incidents == 1
        assert [(i.id, i.in_period_s) for i in r.incidents] == [("INC-000001", 3600.0)]
        assert r.incidents[0].customer_minutes == 60
    r = run(october, by="node", incidents=[inc])
    assert r.weeks[0] == ("2026-W40", 1) and sum(n for _, n in r.weeks) == 1


def test_no_data_is_unknown_never_up() -> None:
    h = up_all_month("core", "ap1", "cpe1", "twr2")
    h["cpe2"] = [(OCT - 86400, "unknown")]  # seen, never confirmed
    # cpe3: in the inventory, no history at all
    r = run(h, by="customer")
    c2 = row(r, "C2")
    assert c2.availability is None and c2.no_data == 1 and c2.unknown_s == MONTH_MIN * MIN
    c1 = row(r, "C1")
    assert c1.targets == 2 and c1.no_data == 1 and c1.availability == 100.0  # cpe1 measured, cpe3 unknown
    res = next(s for s in r.sla if s.service_class == "residencial")
    assert res.availability is None and res.compliant is None and res.customers_no_data == 1
    md = to_markdown(r, "en")
    c2_line = next(line for line in md.splitlines() if line.startswith("| Casa Pérez"))
    assert "100" not in c2_line and "—" in c2_line
    csv_line = next(line for line in to_csv(r).splitlines() if line.startswith("C2,"))
    assert csv_line.split(",")[4] == ""  # availability_pct empty = unknown
    empty = run({}, by="municipality")
    assert all(x.figures.availability is None for x in empty.rows) and empty.totals.availability is None
    assert all(d.availability is None for d in empty.days)


def test_customer_minutes_merge_a_customers_endpoints() -> None:
    h = up_all_month(*ALL)
    h["cpe1"] += [(at(10, 8), "down"), (at(10, 9), "up")]
    h["cpe3"] += [(at(10, 8, 30), "down"), (at(10, 10), "up")]
    h["cpe2"] += [(at(10, 8), "down"), (at(10, 8, 30), "up")]
    r = run(h)
    assert row(r, "arauca").customer_minutes == pytest.approx(120 + 30)  # C1 08:00-10:00 once, C2 30 min
    assert r.days[9].down_min == pytest.approx(60 + 90 + 30)


def test_response_time_compliance() -> None:
    def inc(n: int, opened: float, restored: float | None = None, acked: float | None = None,
            ticketed: float | None = None, customers: tuple[str, ...] = ("C1",),
            kind: str = "single") -> IncidentRecord:
        return IncidentRecord(f"INC-{n:06d}", kind, "cpe1", opened, restored, ("cpe1",), customers, acked, ticketed)

    h = 3600.0
    incidents = [
        inc(1, at(2), at(2) + 5 * h, acked=at(2) + 3 * h),  # met (12 h)
        inc(2, at(3), at(3) + 20 * h, acked=at(3) + 13 * h),  # missed
        inc(3, at(4), at(4) + h),  # restored within the deadline, nobody had to answer
        inc(4, at(31, 20)),  # open at the end, deadline next month: pending
        inc(5, at(5), at(5) + 20 * h),  # no answer and the deadline passed: not acknowledged (a miss)
        # 24 h class: the daemon's ticket is no response (issue 18: compliance was always ~100 %)
        inc(6, at(6), at(6) + 30 * h, ticketed=at(6) + 20 * h, customers=("C2",)),
        inc(7, at(7), at(7) + 2 * h, kind="planned"),  # maintenance: not counted at all
        inc(8, at(8), at(8) + 20 * h, acked=at(8) + 13 * h, customers=("C1", "C2")),  # strictest class: missed
    ]
    r = run(up_all_month(*ALL), incidents=incidents)
    rows = {x.hours: x for x in r.response}
    assert (rows[12].met, rows[12].missed, rows[12].not_acked, rows[12].pending, rows[12].not_needed) == (1, 2, 1, 1, 1)
    assert rows[12].compliance == pytest.approx(25.0)
    assert (rows[24].met, rows[24].missed, rows[24].not_acked) == (0, 0, 1) and rows[24].compliance == 0.0
    assert [i.response for i in r.incidents if i.id in ("INC-000005", "INC-000006")] == ["not_acked", "not_acked"]
    md = to_markdown(r, "en")
    assert "| Not acknowledged |" in md and "never the ticket the monitor opens" in md
    assert r.totals.incidents == 7 and "INC-000007" not in {i.id for i in r.incidents}


def test_a_month_not_over_yet_counts_only_up_to_now() -> None:
    h = up_all_month(*ALL)
    h["cpe1"] += [(at(15, 12), "down")]  # still down "now", on the 16th at 00:00
    incidents = [IncidentRecord("INC-000001", "single", "cpe1", at(15, 12), None, ("cpe1",), ("C2",))]
    r = compute(ReportInput(period=OCTOBER, inventory=inventory(), history=h, incidents=incidents, until=at(16)),
                "node")
    cpe1, core = row(r, "cpe1"), row(r, "core")
    assert core.monitored_s == 15 * 1440 * MIN and core.availability == 100.0  # not 31 days of "up"
    assert cpe1.down_s == 12 * 60 * MIN and cpe1.availability == pytest.approx(100 * 14.5 / 15)
    assert r.incidents[0].in_period_s == 12 * 3600 and r.incidents[0].response == "pending"  # 24 h not over
    assert r.days[20].availability is None and r.data_until == at(16)
    assert "data until 2026-10-16 00:00" in to_markdown(r, "en")


def test_unreachable_behind_a_failed_parent_is_not_the_nodes_own_downtime() -> None:
    """Issue 18: the daemon records DOWN for whatever does not answer; time behind a dead parent is the parent's.
    The worst-10 nodes list root causes, ranked by their own downtime."""
    h = up_all_month(*ALL)
    h["core"] += [(at(12, 1), "down"), (at(12, 2, 30), "up")]                    # 90 min, its own
    h["twr2"] += [(at(12, 1), "down"), (at(12, 2), "up")]                       # only behind core
    h["ap1"] += [(at(10, 8), "down"), (at(10, 9), "up"),                        # 60 min its own
                 (at(12, 1), "down"), (at(12, 2), "up")]                        # 60 min behind core
    h["cpe1"] += [(at(10, 8), "down"), (at(10, 9, 30), "up")]                   # 60 behind ap1, 30 its own
    r = run(h, by="node")
    core, ap1, twr2, cpe1 = (row(r, k) for k in ("core", "ap1", "twr2", "cpe1"))
    assert (core.down_s, core.unreachable_s) == (90 * MIN, 0)
    assert (ap1.down_s, ap1.unreachable_s, ap1.own_down_s) == (120 * MIN, 60 * MIN, 60 * MIN)
    assert (twr2.down_s, twr2.unreachable_s, twr2.own_down_s) == (60 * MIN, 60 * MIN, 0)
    assert (cpe1.unreachable_s, cpe1.own_down_s) == (60 * MIN, 30 * MIN)
    assert ap1.availability is not None and core.availability is not None
    assert ap1.availability < core.availability   # availability still counts all of it: customers had no service
    assert [x.key for x in r.worst_nodes] == ["core", "ap1"]   # twr2 never failed itself
    assert r.totals.unreachable_s == (60 + 60 + 60) * MIN
    assert "own_downtime_min,unreachable_min" in to_csv(r).splitlines()[0]
    worst = to_markdown(r, "en").split("10 worst nodes")[1].splitlines()
    assert "Of it, behind a failed parent (min)" in worst[2] and "| 120.0 | 60.0 |" in worst[5]   # ap1


def test_with_two_parents_it_is_unreachable_only_while_both_are_down() -> None:
    inv = inventory()
    twin = Target("cpe9", "cpe", "endpoint", "127.0.1.9", parents=("ap1", "twr2"), site="s1", municipality="arauca")
    inv = dataclasses.replace(inv, targets={**inv.targets, "cpe9": twin})
    h = up_all_month(*ALL, "cpe9")
    h["ap1"] += [(at(10, 8), "down"), (at(10, 10), "up")]
    h["twr2"] += [(at(10, 9), "down"), (at(10, 11), "up")]
    h["cpe9"] += [(at(10, 8), "down"), (at(10, 11), "up")]
    cpe9 = next(x.figures for x in compute(ReportInput(OCTOBER, inv, h), "node").rows if x.key == "cpe9")
    assert (cpe9.down_s, cpe9.unreachable_s) == (180 * MIN, 60 * MIN)   # 09:00-10:00, both paths gone


def test_zone_words() -> None:
    from monitor.zones import zone_words

    assert zone_words("America/Bogota", "es") == "hora de Colombia"
    assert zone_words("America/Bogota", "en") == "Colombia time"
    assert zone_words("Etc/UTC", "es") == "UTC"
    assert zone_words("Asia/Tokyo", "es") == "hora local (Asia/Tokyo)"


def test_availability_axis_starts_at_a_round_floor_and_says_so_names_are_not_cut() -> None:
    from monitor.report.html import availability_bars, axis_floor

    assert [axis_floor(v) for v in ([99.97], [99.6, 100.0], [99.2], [97.0], [60.0], [0.5], [])] == [
        99.9, 99.5, 99.0, 95.0, 50.0, 0.0, 99.9]
    svg = availability_bars([("Arauquita", 99.97), ("San José de Guaviare Norte", 99.95)], "es")
    assert "El eje empieza en 99,9 %, no en 0" in svg
    assert ">San José de Guaviare Norte</text>" in svg   # the whole name, not its first 18 characters
    assert "The axis starts at 99.9 %, not 0" in availability_bars([("a", 99.95)], "en")


def test_the_progress_line_counts_to_the_end() -> None:
    h = up_all_month(*ALL, *(f"gone-{i}" for i in range(95)))   # 101 targets: 101 is not a multiple of the step
    notes: list[str] = []
    compute(ReportInput(OCTOBER, inventory(), h), "node", progress=notes.append)
    assert notes[-1] == "figures for 101/101 targets"


def test_column_meanings_are_stated() -> None:
    md = to_markdown(run(up_all_month(*ALL)), "en")
    assert "Minutes in each column are summed over the group's targets" in md


def test_no_axis_label_runs_past_the_chart() -> None:
    import re

    from monitor.report.html import column_chart

    svg = column_chart([(f"10-{d:02d}", 1.0) for d in range(1, 32)], "#c62828", "en")
    labels = re.findall(r'<text x="([\d.]+)" y="172" font-size="10" fill="#263238">([^<]*)</text>', svg)
    assert len(labels) >= 8 and all(float(x) + 6 * len(text) <= 460 for x, text in labels)
    assert ">10-31</text>" not in svg   # it would have been cut at the edge (its column keeps its tooltip)


def test_a_customers_own_power_is_shown_apart_and_not_the_isps_downtime() -> None:
    """Issue 17: cpe2's dying gasp alone (a ``power`` incident rooted at the endpoint) is its customer's
    power off, not the ISP's failure: its time is ``customer_power_s``, out of availability, failures,
    incidents and customer minutes. A power cut in an area (rooted at ap1) stays counted: its customers
    have no service; its incident line says the cause, ``power``."""
    h = up_all_month(*ALL)
    h["cpe2"] += [(at(4, 1), "down"), (at(4, 3), "up")]
    h["cpe1"] += [(at(20, 1), "down"), (at(20, 2), "up")]
    h["cpe3"] += [(at(20, 1), "down"), (at(20, 2), "up")]
    own = IncidentRecord("INC-000001", "power", "cpe2", at(4, 1), at(4, 3), ("cpe2",), ("C2",))
    area = IncidentRecord("INC-000002", "power", "ap1", at(20, 1), at(20, 2), ("cpe1", "cpe3"), ("C1",))
    r = run(h, by="node", incidents=[own, area])
    cpe2 = row(r, "cpe2")
    assert cpe2.customer_power_s == 120 * MIN and cpe2.down_s == 0 and cpe2.failures == 0
    assert cpe2.availability == 100.0 and cpe2.incidents == 0
    assert row(r, "cpe1").down_s == 60 * MIN and row(r, "cpe1").incidents == 1
    assert row(r, "cpe1").customer_power_s == 0
    assert r.totals.customer_power_s == 120 * MIN and r.totals.incidents == 1
    assert r.totals.customer_minutes == pytest.approx(60)  # C1's hour; C2's own power is not counted
    assert [(i.id, i.kind) for i in r.incidents] == [("INC-000002", "power")]
    assert "customer_power_min" in to_csv(r).splitlines()[0]
    es, en = to_markdown(r, "es"), to_markdown(r, "en")
    assert "Energía del cliente" in es and "corte de energía" in es and "Customer power" in en and "power cut" in en


def test_time_degraded_per_node_weak_levels_apart_from_failures() -> None:
    """Issue 17: ap1's stations with a weak signal (a ``degraded`` incident for weak levels, two of them
    overlapping: counted once) are time degraded per node, not failures: out of the incident list,
    counts, response compliance and customer minutes. A lossy link's degraded incident at core stays an
    incident and is its own column. A weak-levels incident still open counts up to the period's end."""
    h = up_all_month(*ALL)
    h["cpe1"] += [(at(3, 1), "degraded"), (at(3, 4), "up")]
    weak = [
        IncidentRecord("INC-000001", "degraded", "ap1", at(3, 1), at(3, 4), ("cpe1",), ("C1",), levels=True),
        IncidentRecord("INC-000002", "degraded", "ap1", at(3, 3), at(3, 5), ("cpe2",), ("C2",), levels=True),
        IncidentRecord("INC-000004", "degraded", "ap1", at(31, 23), None, ("cpe3",), ("C1",), levels=True),
    ]
    lossy = IncidentRecord("INC-000003", "degraded", "core", at(9, 1), at(9, 2), ("cpe1",), ("C1",))
    r = run(h, by="node", incidents=[*weak, lossy])
    assert [(d.node, d.levels_s, d.lossy_s, d.incidents, d.customers) for d in r.degraded_nodes] == [
        ("ap1", (4 + 1) * 60 * MIN, 0.0, 3, 2), ("core", 0.0, 60 * MIN, 1, 1)]
    assert [i.id for i in r.incidents] == ["INC-000003"] and r.totals.incidents == 1
    assert row(r, "cpe1").incidents == 1 and row(r, "cpe2").incidents == 0
    assert row(r, "cpe1").availability == 100.0 and row(r, "cpe1").degraded_s == 3 * 60 * MIN
    es, en = to_markdown(r, "es"), to_markdown(r, "en")
    assert "## Tiempo degradado por nodo" in es and "| ap1 | 300,0 | 0,0 | 3 | 2 |" in es
    assert "## Time degraded per node" in en and "| core | 0.0 | 60.0 | 1 | 1 |" in en
