"""``monitor replay`` with outcomes tagged by the poller that saw them (several vantage points, issue 14).

The replay runs the core's own combiner (monitor.remote.vantage), so the scenario files
``tests/scenarios/vantage_*.yaml`` show what the core decides; here: the rules they show are what
decides them (turned off, the same outcomes give incidents), both pollers agreeing is single-daemon
mode, and a poller a line names must be one that covers its target."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from monitor.cli import main
from monitor.remote import vantage
from monitor.replay import replay
from tests.scenario_runner import SCENARIOS, from_raw, load


def events(raw: dict[str, object], name: str) -> list[dict[str, object]]:
    sc = from_raw(raw, name)
    return [e.to_dict() for e in replay(sc.inventory, sc.settings, sc.lines, windows=sc.windows)]


def raw(name: str) -> dict[str, object]:
    return dict(yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text()))


def test_both_pollers_seeing_the_tower_down_is_single_daemon_mode() -> None:
    both = raw("vantage_both_see_tower_down")
    alone = {k: v for k, v in copy.deepcopy(both).items() if k != "pollers"}
    assert events(both, "both") == events(alone, "alone")
    assert [e["event"] for e in events(both, "both")] == ["opened", "updated", "resolved"]


def test_without_the_blind_rule_the_town_pollers_failed_uplink_would_be_an_incident(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The uplink scenario gives nothing because the town poller is set aside as blind: with the rule
    off (no poller ever sees "everything down") its view of the CPEs only it sees would be down."""
    assert events(raw("vantage_town_uplink_fails"), "uplink") == []
    monkeypatch.setattr(vantage, "MIN_ALL_DOWN", 10**9)
    opened = [e for e in events(raw("vantage_town_uplink_fails"), "uplink") if e["event"] == "opened"]
    assert opened and opened[0]["affected_endpoints"] == [f"cpe-0{i}" for i in range(1, 7)]


def test_without_its_declared_vantage_node_the_town_poller_would_not_be_blind() -> None:
    declared = raw("vantage_declared_node_down")
    assert events(declared, "declared") == []
    plain = copy.deepcopy(declared)
    plain["pollers"] = [{k: v for k, v in p.items() if k != "vantage"} for p in plain["pollers"]]  # type: ignore[attr-defined]
    assert [e["event"] for e in events(plain, "plain")][:1] == ["opened"]


def test_a_town_poller_alone_seeing_the_tower_down_is_no_outage_but_the_same_lines_untagged_are() -> None:
    sc = load(SCENARIOS / "vantage_town_sees_tower_down.yaml")
    assert [e.to_dict() for e in replay(sc.inventory, sc.settings, sc.lines)] == []
    town = [line.replace(', "poller": "p-town"', "") for line in sc.lines if '"poller": "p-noc"' not in line]
    assert [e.event for e in replay(sc.inventory, sc.settings, town)][:1] == ["opened"]


CONFIG = Path(__file__).resolve().parents[1] / "config" / "sites.yaml"
POLLERS = """
pollers:
  brokers: [{host: 127.0.0.1}]
  zones:
    - {id: noc, municipalities: [arauca, arauquita, fortul]}
    - {id: saravena, municipalities: [saravena, tame], pollers: [p-town, p-noc]}
"""
UP = '{{"ts": "2026-11-01T00:00:0{n}Z", "target": "{target}", "ok": true{extra}}}'


def with_pollers(tmp_path: Path) -> Path:
    """The example config, with the example's other files, and a zone of two pollers."""
    for f in CONFIG.parent.iterdir():
        if f.is_file():
            (tmp_path / f.name).write_bytes(f.read_bytes())
    cfg = tmp_path / "sites.yaml"
    cfg.write_text(CONFIG.read_text() + POLLERS)
    return cfg


@pytest.mark.parametrize(("lines", "message"), [
    ([("sw-saravena", ', "poller": "p-nowhere"')],
     "in.jsonl:1: unknown poller 'p-nowhere' (the config's pollers: p-noc, p-town)"),
    ([("core-arauca", ', "poller": "p-town"')],
     "in.jsonl:1: poller 'p-town' reports zone 'saravena', and 'core-arauca' is in zone 'noc'"),
    ([("sw-saravena", ', "poller": "p-town"'), ("sw-saravena", "")],
     "in.jsonl:2: 'sw-saravena' has outcomes with and without a poller (tag every outcome of a target with the "
     "poller that saw it, or none)"),
    ([("sw-saravena", ""), ("sw-saravena", ', "poller": "p-noc"')],
     "in.jsonl:2: 'sw-saravena' has outcomes with and without a poller"),
])
def test_a_poller_that_cannot_have_seen_the_target_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            lines: list[tuple[str, str]], message: str) -> None:
    cfg = with_pollers(tmp_path)
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(UP.format(n=n, target=t, extra=x) + "\n" for n, (t, x) in enumerate(lines)))
    assert main(["replay", "--config", str(cfg), "--input", str(inp), "--output", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_poller_without_a_pollers_section_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(UP.format(n=0, target="core-arauca", extra=', "poller": "p-town"') + "\n")
    assert main(["replay", "--config", str(CONFIG), "--input", str(inp)]) == 2
    assert f"in.jsonl:1: poller 'p-town', but {CONFIG} has no pollers: section" in capsys.readouterr().err


def test_tagged_outcomes_replay_through_the_cli(tmp_path: Path) -> None:
    cfg = with_pollers(tmp_path)
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(UP.format(n=n, target="sw-saravena", extra=f', "poller": "{p}"') + "\n"
                           for n, p in enumerate(["p-town", "p-noc", "p-town"])))
    assert main(["replay", "--config", str(cfg), "--input", str(inp), "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out").read_text() == ""
