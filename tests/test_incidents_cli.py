"""``monitor incidents`` and ``monitor maintenance`` against a real store the service wrote."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.clock import ManualClock
from monitor.correlate.incidents import format_ts
from monitor.correlate.service import CorrelationService
from monitor.correlate.store import IncidentStore
from monitor.inventory.loader import load_inventory
from tests.correlate_helpers import tree_inventory
from tests.test_correlate_service import SETTINGS, T0, burst

CONFIG = Path(__file__).resolve().parents[1] / "config" / "sites.yaml"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    inv = tree_inventory(1, 2, 3, gateway=True)  # gw answers: an outage at the core, not blindness
    path = tmp_path / "monitor.db"
    clock = ManualClock(T0 - 1)
    svc = CorrelationService(inv, path, SETTINGS, clock)
    for c in burst(inv):
        clock.set(c.ts)
        svc.on_state_changes([c])
    clock.set(T0 + 200)
    svc.tick()
    svc.close()
    return path


def test_list_show_ack_note_resolve(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["incidents", "list", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "INC-000001  outage" in out and "core" in out
    assert main(["incidents", "ack", "INC-000001", "--db", str(db), "--by", "ana", "--note", "on my way"]) == 0
    assert main(["incidents", "note", "INC-000001", "breaker tripped", "--db", str(db), "--by", "luis"]) == 0
    assert main(["incidents", "resolve", "INC-000001", "--db", str(db), "--by", "ana"]) == 0
    capsys.readouterr()
    assert main(["incidents", "show", "INC-000001", "--db", str(db), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["incident"]["acked_by"] == "ana"
    assert shown["incident"]["affected_endpoints"] == 6
    assert [a["action"] for a in shown["actions"]] == ["ack", "note", "resolve"]
    assert [a["done"] for a in shown["actions"]] == [True, True, False]  # the daemon resolves
    assert shown["events"][0]["event"] == "opened"
    assert main(["incidents", "show", "INC-000001", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert "acknowledged by ana" in text and "(pending)" in text


def test_list_and_show_use_the_configured_zone_unless_asked(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 18: people read the ISP's local time (the config's delivery.timezone); UTC when asked; JSON stays UTC."""
    from tests.test_correlate_service import T0 as opened

    bogota = datetime.fromtimestamp(opened, timezone(timedelta(hours=-5)))
    assert main(["incidents", "list", "--db", str(db), "--config", str(CONFIG)]) == 0
    out = capsys.readouterr().out
    assert "OPENED (America/Bogota)" in out and bogota.strftime("%Y-%m-%d %H:%M") in out
    assert main(["incidents", "show", "INC-000001", "--db", str(db), "--config", str(CONFIG)]) == 0
    out = capsys.readouterr().out
    opened_line = out.splitlines()[1]
    assert "(times: America/Bogota)" in out and opened_line.startswith(bogota.strftime("opened %Y-%m-%dT%H:%M"))
    assert opened_line.endswith("-05:00")
    assert main(["incidents", "list", "--db", str(db), "--config", str(CONFIG), "--tz", "UTC"]) == 0
    out = capsys.readouterr().out
    assert "OPENED (UTC)" in out and datetime.fromtimestamp(opened, UTC).strftime("%Y-%m-%d %H:%M") in out
    assert main(["incidents", "list", "--db", str(db), "--tz", "Mars/Olympus"]) == 2
    assert "--tz: unknown time zone 'Mars/Olympus'" in capsys.readouterr().err


def test_unknown_incident_is_a_clear_error(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["incidents", "ack", "INC-999999", "--db", str(db)]) == 2
    assert "no incident INC-999999" in capsys.readouterr().err


def test_missing_store_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["incidents", "list", "--db", str(tmp_path / "none.db")]) == 2
    assert "no store here" in capsys.readouterr().err


def test_maintenance_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "monitor.db"
    IncidentStore(db).close()
    args = ["--config", str(CONFIG), "--db", str(db)]
    assert main(["maintenance", "add", *args, "--node", "ap-centro-1", "--start", "2026-11-24T02:00:00-05:00",
                 "--duration", "2h", "--reason", "firmware", "--by", "ana"]) == 0
    # the configured zone's clock, said on the line (issue 18: it printed UTC)
    assert "window 1 on ap-centro-1: 2026-11-24T02:00:00-05:00 .. 2026-11-24T04:00:00-05:00 (America/Bogota)" \
        in capsys.readouterr().out
    store = IncidentStore(db)
    [w] = store.maintenance()
    inv = load_inventory(CONFIG)
    below = {t.customer for t in inv.targets.values() if t.parents == ("ap-centro-1",) and t.customer}
    assert set(w.customers) == below and below
    assert store.maintenance_rev() == "1"
    assert main(["maintenance", "list", *args]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 maintenance windows (times: America/Bogota)\n")
    assert "ap-centro-1" in out and "2026-11-24T02:00:00-05:00 .. 2026-11-24T04:00:00-05:00" in out and "Z " not in out
    assert main(["maintenance", "list", *args, "--tz", "UTC"]) == 0  # UTC when asked
    out = capsys.readouterr().out
    assert "(times: UTC)" in out and "2026-11-24T07:00:00Z .. 2026-11-24T09:00:00Z" in out
    assert main(["maintenance", "remove", *args, "1"]) == 0
    assert store.maintenance() == [] and store.maintenance_rev() == "2"
    assert main(["maintenance", "remove", *args, "1"]) == 2
    assert "no active maintenance window 1" in capsys.readouterr().err
    store.close()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--node", "nope", "--start", "2026-11-24T02:00:00Z", "--duration", "1h"],
         "no node or endpoint with id 'nope'"),
        (["--node", "ap-centro-1", "--start", "tomorrow", "--duration", "1h"],
         "--start 'tomorrow': expected ISO-8601"),
        (["--node", "ap-centro-1", "--start", "2026-11-24T02:00:00Z", "--end", "2026-11-24T01:00:00Z"],
         "is not after start"),
        (["--node", "ap-centro-1", "--start", "2026-11-24T02:00:00Z", "--duration", "soon"], "--duration 'soon'"),
    ],
)
def test_maintenance_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                              message: str) -> None:
    db = tmp_path / "monitor.db"
    IncidentStore(db).close()
    assert main(["maintenance", "add", "--config", str(CONFIG), "--db", str(db), *extra]) == 2
    assert message in capsys.readouterr().err


def test_eta_at_or_in_is_recorded_as_an_iso_time(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    at = datetime.fromtimestamp(int(time.time()) + 30 * 86400, timezone(timedelta(hours=-5)))
    assert main(["incidents", "eta", "INC-000001", "--db", str(db), "--by", "ana", "--at", at.isoformat(),
                 "--config", str(CONFIG)]) == 0
    assert f"ETA {at.isoformat()} (America/Bogota)" in capsys.readouterr().out  # the config's clock, said
    assert main(["incidents", "eta", "INC-000001", "--db", str(db), "--at", at.isoformat(), "--tz", "UTC"]) == 0
    assert f"ETA {format_ts(at.timestamp())} (UTC)" in capsys.readouterr().out
    before = time.time()
    assert main(["incidents", "eta", "INC-000001", "--db", str(db), "--in", "2h"]) == 0
    store = IncidentStore(db)
    eta = store.etas()["INC-000001"]
    assert eta is not None and abs(eta - (before + 7200)) < 60  # the newest wins
    assert [a[1] for a in store.actions("INC-000001")] == ["eta", "eta", "eta"]
    assert store.actions("INC-000001")[0][2:4] == ("ana", format_ts(at.timestamp()))
    store.close()
    capsys.readouterr()
    assert main(["incidents", "eta", "INC-000001", "--db", str(db), "--at", "2020-01-01T00:00Z"]) == 2
    assert "not in the future" in capsys.readouterr().err
    assert main(["incidents", "eta", "INC-000001", "--db", str(db), "--in", "soon"]) == 2
    assert "--in 'soon'" in capsys.readouterr().err
    # a year and more ahead is a typo, and year 9999 with an offset is past what a time can print
    for flag, value in (("--at", "2099-11-23T15:00-05:00"), ("--at", "9999-12-31T23:00:00-05:00"), ("--in", "400d")):
        assert main(["incidents", "eta", "INC-000001", "--db", str(db), flag, value]) == 2
        assert "ETA is more than 366 days ahead" in capsys.readouterr().err


def test_show_says_a_suspected_incident_was_upgraded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The upgrade is on the row (the engine needs it after a restart); staff see it too."""
    from tests.scenario_runner import SCENARIOS, load, run_service

    path = tmp_path / "monitor.db"
    run_service(load(SCENARIOS / "restart_after_upgrade.yaml"), path)
    assert main(["incidents", "show", "INC-000001", "--db", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["incident"]["kind"], shown["incident"]["upgraded"]) == ("outage", True)
    assert main(["incidents", "show", "INC-000001", "--db", str(path)]) == 0
    assert "opened as suspected, then its node went down" in capsys.readouterr().out


def test_eta_clear_withdraws_the_estimate(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["incidents", "eta", "INC-000001", "--db", str(db), "--clear"]) == 2  # none yet
    assert "INC-000001 has no restoration estimate to withdraw" in capsys.readouterr().err
    assert main(["incidents", "eta", "INC-000001", "--db", str(db), "--in", "2h"]) == 0
    assert main(["incidents", "eta", "INC-000001", "--db", str(db), "--by", "ana", "--clear"]) == 0
    assert "INC-000001: estimate withdrawn" in capsys.readouterr().out
    store = IncidentStore(db)
    assert store.etas() == {"INC-000001": None}  # withdrawn, which delivery tells from "not listed"
    assert store.actions("INC-000001")[-1][1:4] == ("eta", "ana", "withdrawn")
    store.close()
    assert main(["incidents", "show", "INC-000001", "--db", str(db)]) == 0
    assert "eta      ana: withdrawn" in capsys.readouterr().out
    assert main(["incidents", "eta", "INC-000001", "--db", str(db), "--clear"]) == 2  # twice: nothing to withdraw
    assert "no restoration estimate to withdraw" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["incidents", "eta", "INC-000001", "--db", str(db), "--clear", "--in", "2h"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    # a new estimate after the withdrawal counts again
    assert main(["incidents", "eta", "INC-000001", "--db", str(db), "--in", "3h"]) == 0
    store = IncidentStore(db)
    assert store.etas()["INC-000001"] is not None
    store.close()


def test_show_says_when_a_blindness_whose_alert_staff_resolved_really_ended(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.correlate.incidents import format_ts
    from tests.scenario_runner import EPOCH, SCENARIOS, load, run_service

    path = tmp_path / "monitor.db"
    run_service(load(SCENARIOS / "restart_resolved_blind.yaml"), path)
    assert main(["incidents", "show", "INC-000001", "--db", str(path), "--tz", "UTC"]) == 0
    assert f"blindness ended {format_ts(EPOCH + 1010)}" in capsys.readouterr().out
    with sqlite3.connect(path) as con:  # as it reads while the monitor is still blind
        con.execute("UPDATE incidents SET cleared_at = NULL WHERE id = 'INC-000001'")
    assert main(["incidents", "show", "INC-000001", "--db", str(path)]) == 0
    assert "blindness still going on (its alert was resolved)" in capsys.readouterr().out


def test_a_window_that_cannot_be_printed_is_refused_and_the_store_stays_usable(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--duration 99999999999999999999d`` parses (8.64e24 s): the window used to be stored, and then
    the add and every ``maintenance list`` after it died with an OverflowError traceback."""
    db = tmp_path / "monitor.db"
    IncidentStore(db).close()
    args = ["--config", str(CONFIG), "--db", str(db)]
    assert main(["maintenance", "add", *args, "--node", "ap-centro-1", "--start", "2026-11-24T02:00:00Z",
                 "--duration", "99999999999999999999d"]) == 2
    assert "the end is not between the years 1 and 9999 (UTC)" in capsys.readouterr().err
    assert main(["maintenance", "list", *args]) == 0
    store = IncidentStore(db)
    assert store.maintenance(include_removed=True) == []
    store.close()
    assert main(["maintenance", "remove", *args, "99999999999999999999999"]) == 2  # past SQLite's integers
    assert "no active maintenance window 99999999999999999999999" in capsys.readouterr().err


def test_list_filters_by_municipality_and_shows_who_was_affected(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 18: ``incidents list --all --municipality`` for a town's history; a resolved incident still says
    how many endpoints and customers it affected."""
    from tests.report_support import october_store

    db = tmp_path / "monitor.db"
    october_store(db, load_inventory(CONFIG))
    args = ["--db", str(db), "--config", str(CONFIG), "--all"]
    assert main(["incidents", "list", *args, "--municipality", "arauca"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    outage = next(line for line in lines if "outage" in line)
    assert "resolved" in outage and "ap-centro-1" in outage and outage.split()[-3:-1] == ["4", "4"]
    assert main(["incidents", "list", *args, "--municipality", "tame"]) == 0
    assert capsys.readouterr().out.strip() == "no incidents"
    assert main(["incidents", "list", *args, "--municipality", "arauca", "--json"]) == 0
    assert {d["root"] for d in json.loads(capsys.readouterr().out)} >= {"ap-centro-1"}
    assert main(["incidents", "list", *args, "--municipality", "bogota"]) == 2
    assert "--municipality: unknown municipality 'bogota' (expected one of: arauca," in capsys.readouterr().err
