"""Recurring maintenance windows (issue 18): an RFC 5545 RRULE expanded into one window per occurrence,
from the config and from ``monitor maintenance add --every``; each occurrence gets its own advance
notice and is excluded from reports on its own."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.cli import main
from monitor.correlate.store import IncidentStore
from monitor.delivery.planner import GlobalMemory, plan_maintenance
from monitor.errors import ConfigError
from monitor.inventory.loader import load_inventory
from monitor.recurrence import MAX_OCCURRENCES, RecurrenceError, occurrences
from monitor.report.compute import compute
from monitor.report.model import Interval, ReportInput
from tests.delivery_support import SECRETS, write_config
from tests.report_support import OCTOBER, at, inventory, up_all_month
from tests.test_delivery_planner import ctx_of, window

BOGOTA = ZoneInfo("America/Bogota")
CONFIG = Path(__file__).resolve().parents[1] / "config" / "sites.yaml"


def local(ts: float, zone: ZoneInfo = BOGOTA) -> str:
    return datetime.fromtimestamp(ts, zone).strftime("%a %Y-%m-%d %H:%M")


def tue(day: int) -> float:
    return datetime(2026, 11, day, 2, 0, tzinfo=BOGOTA).timestamp()


def test_every_tuesday_two_to_four() -> None:
    got = occurrences("FREQ=WEEKLY;BYDAY=TU;COUNT=3", tue(3), tue(3) + 7200, "America/Bogota")
    assert [(local(s), e - s) for s, e in got] == [("Tue 2026-11-03 02:00", 7200), ("Tue 2026-11-10 02:00", 7200),
                                                   ("Tue 2026-11-17 02:00", 7200)]


def test_first_tuesday_of_each_month_until_a_date() -> None:
    got = occurrences("RRULE:FREQ=MONTHLY;BYDAY=1TU;UNTIL=20270202", tue(3), tue(3) + 3600, "America/Bogota")
    assert [local(s) for s, _ in got] == ["Tue 2026-11-03 02:00", "Tue 2026-12-01 02:00", "Tue 2027-01-05 02:00",
                                          "Tue 2027-02-02 02:00"]   # UNTIL as a date includes that day


def test_wall_clock_time_is_kept_across_a_dst_change() -> None:
    ny = ZoneInfo("America/New_York")
    start = datetime(2026, 3, 3, 2, 0, tzinfo=ny).timestamp()
    got = occurrences("FREQ=WEEKLY;COUNT=2", start, start + 3600, "America/New_York")
    assert [local(s, ny) for s, _ in got] == ["Tue 2026-03-03 02:00", "Tue 2026-03-10 02:00"]
    assert got[1][0] - got[0][0] == 7 * 86400 - 3600


def test_an_open_ended_rule_stops_at_two_years_and_the_cap() -> None:
    weekly = occurrences("FREQ=WEEKLY", tue(3), tue(3) + 60, "America/Bogota")
    assert len(weekly) == 105 and weekly[-1][0] - weekly[0][0] <= 731 * 86400
    assert len(occurrences("FREQ=DAILY;INTERVAL=1", tue(3), tue(3) + 60, "UTC")) == 732
    assert len(occurrences("FREQ=DAILY;COUNT=1000", tue(3), tue(3) + 60, "UTC")) == 732   # the horizon first


@pytest.mark.parametrize(("rule", "message"), [
    ("FREQ=HOURLY", "FREQ must be one of DAILY, WEEKLY, MONTHLY, YEARLY"),
    ("FREQ=WEEKLY;BYHOUR=2", "unsupported RRULE part 'BYHOUR' (allowed: FREQ, INTERVAL, COUNT, UNTIL, BYDAY, "
                             "BYMONTHDAY, BYMONTH, BYSETPOS, WKST; the time of day is the first window's)"),
    ("FREQ=WEEKLY;COUNT=2;UNTIL=20270101", "give COUNT or UNTIL, not both"),
    ("FREQ=WEEKLY;COUNT=5000", f"COUNT must be between 1 and {MAX_OCCURRENCES}"),
    ("FREQ=WEEKLY;UNTIL=20200101", "UNTIL is before the first window"),
    ("FREQ=WEEKLY;BYDAY=XX", "not a valid RRULE: "),
    ("every tuesday", "unsupported RRULE part 'EVERY TUESDAY'"),
])
def test_a_bad_rule_says_why(rule: str, message: str) -> None:
    with pytest.raises(RecurrenceError) as err:
        occurrences(rule, tue(3), tue(3) + 60, "America/Bogota")
    assert str(err.value).startswith(message)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(["FREQ=DAILY", "FREQ=WEEKLY", "FREQ=MONTHLY", "FREQ=YEARLY", "BYDAY=TU", "BYDAY=-1FR",
                              "BYMONTHDAY=31", "BYMONTHDAY=-1", "BYMONTH=2", "BYSETPOS=-1", "INTERVAL=3", "COUNT=7",
                              "UNTIL=20270101", "UNTIL=20261231T235959Z", "WKST=SU", "BYMONTHDAY=30", "INTERVAL=0"]),
             min_size=1, max_size=5).map(";".join)))
def test_any_rule_text_is_refused_or_bounded(rule: str) -> None:
    started = time.monotonic()
    try:
        got = occurrences(rule, tue(3), tue(3) + 7200, "America/Bogota")
    except RecurrenceError:
        return
    finally:
        assert time.monotonic() - started < 30   # a hang guard, not a speed test
    assert 1 <= len(got) <= MAX_OCCURRENCES and got[0] == (tue(3), tue(3) + 7200)
    assert all(e - s == 7200 for s, e in got) and all(a[0] < b[0] for a, b in itertools.pairwise(got))
    assert got[-1][0] <= tue(3) + 731 * 86400


def _config(tmp_path: Path, every: str) -> Path:
    path = write_config(tmp_path, 3)
    doc = yaml.safe_load(path.read_text())
    doc["maintenance"] = [{"node": "ap-1", "start": "2026-11-24T02:00:00-05:00", "end": "2026-11-24T04:00:00-05:00",
                           "every": every, "reason": "cambio de radio"}]
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


def test_config_every_makes_one_window_each_with_its_own_advance_notice(tmp_path: Path) -> None:
    inv = load_inventory(_config(tmp_path, "FREQ=WEEKLY;BYDAY=TU;COUNT=3"), env=SECRETS)
    assert [(local(m.start), m.end - m.start, m.reason) for m in inv.maintenance] == [
        ("Tue 2026-11-24 02:00", 7200, "cambio de radio"), ("Tue 2026-12-01 02:00", 7200, "cambio de radio"),
        ("Tue 2026-12-08 02:00", 7200, "cambio de radio")]
    windows = [window(i, m.node, m.start, m.end, m.reason) for i, m in enumerate(inv.maintenance, 1)]
    ctx, glob = ctx_of(inv), GlobalMemory()
    lead = ctx.cfg.customers.maintenance_lead   # 48 h: only the occurrence within it is announced
    told: Counter[str] = Counter()
    for w in windows:
        for item in plan_maintenance(windows, [], glob, ctx, w.start - lead + 60).items:
            told[f"{item.incident}/{item.action}"] += 1
    assert told == Counter({f"MW-{w}/maintenance_advance": 3 for w in (1, 2, 3)})   # 3 customers, once per occurrence


def test_config_every_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_inventory(_config(tmp_path, "FREQ=MINUTELY"), env=SECRETS)
    assert any("maintenance[0].every: FREQ must be one of DAILY, WEEKLY, MONTHLY, YEARLY" in p
               for p in err.value.problems), err.value.problems


def test_each_occurrence_is_excluded_from_the_report_on_its_own() -> None:
    h = up_all_month("core", "ap1", "cpe1", "cpe2", "cpe3", "twr2")
    h["ap1"] += [(at(13, 2, 30), "down"), (at(13, 3), "up"),      # inside the 2nd occurrence (Tuesday 13th)
                 (at(14, 2, 30), "down"), (at(14, 3), "up")]      # the next day: not maintenance
    spans = occurrences("FREQ=WEEKLY;COUNT=4", at(6, 2), at(6, 4), "UTC")
    maint = {t: [Interval(s, e) for s, e in spans] for t in ("ap1", "cpe1", "cpe2", "cpe3")}
    ap1 = next(r.figures for r in compute(ReportInput(OCTOBER, inventory(), h, maint), "node").rows if r.key == "ap1")
    assert ap1.maintenance_s == 4 * 7200 and ap1.down_s == 1800


def test_cli_every_adds_one_window_per_occurrence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "monitor.db"
    IncidentStore(db).close()
    args = ["--config", str(CONFIG), "--db", str(db)]
    assert main(["maintenance", "add", *args, "--node", "ap-centro-1", "--start", "2026-11-24T02:00:00-05:00",
                 "--duration", "2h", "--every", "FREQ=MONTHLY;BYDAY=-1TU;COUNT=3", "--by", "ana"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[1].split(",")[0] for line in out] == [
        "2026-11-24T02:00:00-05:00 .. 2026-11-24T04:00:00-05:00 (America/Bogota)",
        "2026-12-29T02:00:00-05:00 .. 2026-12-29T04:00:00-05:00 (America/Bogota)",
        "2027-01-26T02:00:00-05:00 .. 2027-01-26T04:00:00-05:00 (America/Bogota)"]   # the last Tuesday, 02:00 in Bogotá
    assert main(["maintenance", "add", *args, "--node", "ap-centro-1", "--start", "2026-11-24T02:00:00-05:00",
                 "--duration", "2h", "--every", "FREQ=SECONDLY"]) == 2
    assert "--every 'FREQ=SECONDLY': FREQ must be one of" in capsys.readouterr().err
    store = IncidentStore(db)
    assert len(store.maintenance()) == 3   # the refused rule added nothing
    store.close()


def test_no_occurrence_ends_after_the_year_9999() -> None:
    start = datetime(9999, 12, 20, 2, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    got = occurrences("FREQ=DAILY", start, start + 7200, "UTC")
    assert len(got) == 12 and got[-1][1] <= datetime(9999, 12, 31, 23, 59, 59, tzinfo=ZoneInfo("UTC")).timestamp()
