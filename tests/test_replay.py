"""``monitor replay`` end to end on the example config: output, determinism, errors, --set."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.cli import main
from monitor.correlate.engine import Engine
from monitor.correlate.incidents import format_ts, parse_ts
from monitor.correlate.topology import Topology
from monitor.inventory.loader import load_inventory
from monitor.replay import _FAIL, _OK, StepCache, _no_change, _reasons, _rules, replay, settings_for
from monitor.state import Confirmation, Observation, State, StateChange, TargetState, step
from tests.scenario_runner import EPOCH, below

CONFIG = Path(__file__).resolve().parents[1] / "config" / "sites.yaml"



def _outcomes(path: Path, failing: set[str], start: float, end: float, duration: float = 1800) -> Path:
    inv = load_inventory(CONFIG)
    interval = inv.polling.interval
    ids = list(inv.targets)
    polls = []
    for i, tid in enumerate(ids):
        off = i * interval / len(ids)
        k = 0
        while (t := k * interval + off) < duration:
            polls.append((t, i, tid, not (tid in failing and start <= t < end)))
            k += 1
    polls.sort()
    with path.open("w") as f:
        for t, _, tid, ok in polls:
            rec = {"ts": format_ts(EPOCH + t), "target": tid, "ok": ok}
            if ok:
                rec["rtt_ms"] = 3.5
                rec["loss"] = 0.0
            f.write(json.dumps(rec) + "\n")
    return path


@pytest.fixture(scope="module")
def ap_outage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    inv = load_inventory(CONFIG)
    return _outcomes(tmp_path_factory.mktemp("r") / "in.jsonl", below(inv, ["ap-centro-1"]), 300, 900)


def _run(tmp_path: Path, inp: Path, *extra: str, name: str = "out.jsonl") -> list[dict[str, Any]]:
    out = tmp_path / name
    assert main(["replay", "--config", str(CONFIG), "--input", str(inp), "--output", str(out), *extra]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_ap_outage_yields_one_incident_with_its_customers(tmp_path: Path, ap_outage: Path) -> None:
    events = _run(tmp_path, ap_outage)
    inv = load_inventory(CONFIG)
    expected_eps = sorted(t for t in below(inv, ["ap-centro-1"]) if inv.targets[t].role == "endpoint")
    first = events[0]
    assert (first["event"], first["kind"], first["root"]) == ("opened", "outage", "ap-centro-1")
    assert {e["incident"] for e in events} == {"INC-000001"}
    # endpoints polled after the AP join with an update; the largest announced set is all of them
    widest = max(events[:-1], key=lambda e: len(e["affected_endpoints"]))
    assert widest["affected_endpoints"] == expected_eps
    assert widest["affected_customers"] == sorted({inv.targets[t].customer for t in expected_eps}, key=str)
    assert events[-1]["affected_endpoints"] == expected_eps  # resolved: everyone restored
    assert events[-1]["event"] == "resolved"
    assert list(events[0]) == ["ts", "event", "incident", "kind", "root", "affected_endpoints", "affected_customers"]


def test_same_input_and_settings_give_byte_identical_output(tmp_path: Path, ap_outage: Path) -> None:
    _run(tmp_path, ap_outage, "--set", "K=2", name="a.jsonl")
    _run(tmp_path, ap_outage, "--set", "K=2", name="b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_set_changes_the_outcome(tmp_path: Path, ap_outage: Path) -> None:
    base = _run(tmp_path, ap_outage)
    slower = _run(tmp_path, ap_outage, "--set", "down_after=5", "--set", "hold_down=10m", name="s.jsonl")
    assert slower[0]["ts"] > base[0]["ts"]  # confirmation takes two more polls
    assert slower[-1]["ts"] > base[-1]["ts"]  # and the hold-down is twice as long


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "bogus=1"], "--set bogus: unknown setting"),
        (["--set", "K=three"], "--set K=three: expected a whole number"),
        (["--set", "W=soon"], "--set W=soon: expected a duration"),
        (["--set", "P=150"], "min_share (P) must be a percentage"),
        (["--set", "K"], "--set K: expected key=value"),
    ],
)
def test_bad_overrides_are_named(tmp_path: Path, ap_outage: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                 message: str) -> None:
    assert main(["replay", "--config", str(CONFIG), "--input", str(ap_outage), *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"ts": "2026-11-01T00:00:00Z", "target": "core-arauca", "ok": true}',
          '{"ts": "2026-11-01T00:00:01Z", "target": "nope-1", "ok": false}'], "in.jsonl:2: unknown target 'nope-1'"),
        (['{"ts": "2026-11-01T00:00:05Z", "target": "core-arauca", "ok": true}',
          '{"ts": "2026-11-01T00:00:01Z", "target": "core-arauca", "ok": true}'],
         "in.jsonl:2: ts 2026-11-01T00:00:01Z is earlier"),
        (['{"ts": "yesterday", "target": "core-arauca", "ok": true}'], "in.jsonl:1: ts 'yesterday' is not ISO-8601"),
        (['{"ts": "2026-11-01T00:00:00Z", "ok": true}'], "in.jsonl:1: expected an object with ts, target and ok"),
        (["not json"], "in.jsonl:1: not a JSON object"),
        (['{"ts": "2026-11-01T00:00:00Z", "target": "core-arauca", "ok": "yes"}'],
         "in.jsonl:1: ok must be true or false"),
        (['{"ts": "2026-11-01T00:00:00Z", "target": "core-arauca", "ok": true, "loss": 40}'],
         "in.jsonl:1: loss must be a fraction"),
    ],
)
def test_bad_input_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str],
                                  message: str) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    assert main(["replay", "--config", str(CONFIG), "--input", str(inp), "--output", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no output, not even a half-written one


def test_skipping_unchanging_polls_is_equivalent_to_step() -> None:
    """The replay fast path skips ``step`` only where it could not change anything that matters."""
    rng = random.Random(3)
    rules = Confirmation(down_after=3, up_after=2, degraded_after=2)
    observations = [Observation(True), Observation(False), Observation(True, ("rtt",))]
    for _ in range(300):
        full = fast = TargetState()
        for i in range(60):
            obs = rng.choice(observations)
            full, c1 = step(full, obs, float(i), rules, "t")
            if _no_change(fast, obs):
                c2 = None
            else:
                fast, c2 = step(fast, obs, float(i), rules, "t")
            assert (c1 is None) == (c2 is None)
            assert full.state == fast.state
            if c1 is not None:
                assert c1 == c2
    assert State.DOWN  # the loop above exercised every state


def test_cached_step_gives_what_step_gives() -> None:
    """Same new state (every field, ``since`` included) and same StateChange as the state machine."""
    rng = random.Random(5)
    cached = StepCache()
    observations = [_OK, _FAIL, Observation(True, ("rtt 80.0ms > 50ms",))]
    seen = set()
    for k in range(300):
        rules = Confirmation(down_after=rng.randint(1, 4), up_after=rng.randint(1, 3), degraded_after=rng.randint(1, 3))
        full = fast = TargetState()
        t = 1_000.0 * k
        for _ in range(60):
            t += rng.choice([0.5, 10.0, 60.0])
            obs = rng.choice(observations)
            target = rng.choice(["a", "b"])
            full, c1 = step(full, obs, t, rules, target)
            fast, c2 = cached(fast, obs, t, rules, target)
            assert fast == full
            assert c2 == c1
            seen.add(full.state)
    assert seen == set(State)
    assert cached.memo  # the cache was used, not only the fallback



# what one poll may record: every shape the replay loop reads differently, in and out of thresholds
_POLLS: list[dict[str, Any]] = [
    {"ok": True}, {"ok": True, "rtt_ms": 3.5}, {"ok": True, "rtt_ms": None}, {"ok": True, "rtt_ms": 3.5, "loss": 0.0},
    {"ok": True, "rtt_ms": 900.0}, {"ok": True, "loss": 0.5}, {"ok": True, "rtt_ms": 3.5, "loss": None},
    {"ok": True, "loss": 0.0}, {"ok": False}, {"ok": False, "rtt_ms": 2.0}, {"ok": False, "cause": "los"},
    {"ok": False, "rtt_ms": None, "loss": 0.9, "cause": "dying_gasp"},
]


class _Recording(Engine):
    """The real engine, keeping every state change the replay hands it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[StateChange] = []

    def apply_many(self, changes: Iterable[StateChange], *, until_output: bool = False) -> int:
        batch = list(changes)
        n = super().apply_many(batch, until_output=until_output)
        self.seen.extend(batch[:n])
        return n


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.lists(st.tuples(st.sampled_from(range(len(_POLLS))), st.integers(1, 4)), min_size=1, max_size=10),
                min_size=1, max_size=6))
def test_replay_confirms_what_the_state_machine_confirms_poll_by_poll(spans: list[list[tuple[int, int]]]) -> None:
    """The replay loop's shortcuts (polls that change nothing skipped after one lookup, the usual
    record shapes read without the key-set test, cached decisions) confirm exactly the transitions
    that ``step`` confirms on every poll, with the daemon's observations. Each target polls runs of
    one outcome (1-4 polls in a row: enough to confirm DOWN, UP and DEGRADED)."""
    runs = [[poll for poll, times in target for _ in range(times)] for target in spans]
    inv = load_inventory(CONFIG, secrets=False)
    cfg = settings_for(inv)
    ids = sorted(inv.targets)[: len(runs)]
    lines, polls = [], []
    for k in range(max(map(len, runs))):
        for i, (tid, run) in enumerate(zip(ids, runs, strict=False)):
            if k < len(run):
                rec = {"ts": format_ts(EPOCH + 60.0 * k + i), "target": tid, **_POLLS[run[k]]}
                lines.append(json.dumps(rec) + "\n")
                polls.append(rec)
    engine = _Recording(Topology.from_inventory(inv), cfg)
    list(replay(inv, cfg, lines, engine=engine))
    want: list[StateChange] = []
    states: dict[str, TargetState] = {}
    for rec in polls:
        tid, target = rec["target"], inv.targets[rec["target"]]
        if rec["ok"]:
            obs = Observation(True, degraded_reasons=_reasons(target, rec.get("rtt_ms"), rec.get("loss"), "t", 0))
        elif "cause" in rec:
            obs = Observation(False, detail=f"last down cause {rec['cause']}", cause=rec["cause"])
        else:
            obs = _FAIL
        rules = _rules(target, cfg, {})
        states[tid], change = step(states.get(tid, TargetState()), obs, parse_ts(rec["ts"]), rules, tid)
        if change is not None:
            want.append(change)
    assert engine.seen == want


def test_the_configs_correlation_section_applies_and_set_overrides_it(tmp_path: Path, ap_outage: Path) -> None:
    """replay starts from the daemon's settings: the inventory's ``correlation:`` section, then --set."""
    for name in ("customers.csv", "secrets"):
        (tmp_path / name).symlink_to(CONFIG.parent / name)
    config = tmp_path / "sites.yaml"
    config.write_text(CONFIG.read_text() + "\ncorrelation: {hold_down: 10m}\n")
    base = _run(tmp_path, ap_outage, name="base.jsonl")

    def replay_with(*extra: str, name: str) -> list[dict[str, Any]]:
        out = tmp_path / name
        assert main(["replay", "--config", str(config), "--input", str(ap_outage), "--output", str(out), *extra]) == 0
        return [json.loads(line) for line in out.read_text().splitlines()]

    from_config = replay_with(name="config.jsonl")
    assert from_config == _run(tmp_path, ap_outage, "--set", "hold_down=10m", name="set.jsonl")
    assert from_config[-1]["ts"] > base[-1]["ts"]
    assert replay_with("--set", f"hold_down={5 * load_inventory(CONFIG).polling.interval:g}", name="o.jsonl") == base


def _config_with(tmp_path: Path, extra: str) -> Path:
    for name in ("customers.csv", "secrets"):
        if not (tmp_path / name).exists():
            (tmp_path / name).symlink_to(CONFIG.parent / name)
    config = tmp_path / "sites.yaml"
    config.write_text(CONFIG.read_text() + extra)
    return config


def test_the_configs_maintenance_windows_are_planned_as_the_daemon_plans_them(tmp_path: Path, ap_outage: Path) -> None:
    """A what-if over last month must not count planned work as outages (issue 19): the config's
    ``maintenance:`` windows apply as in the daemon. The AP's failure (minute 5 to 15) inside a
    window is ``planned``; with a window that ends at minute 10 it becomes an outage then."""
    def replay_with(config: Path, name: str) -> list[dict[str, Any]]:
        out = tmp_path / name
        assert main(["replay", "--config", str(config), "--input", str(ap_outage), "--output", str(out)]) == 0
        return [json.loads(line) for line in out.read_text().splitlines()]

    base = _run(tmp_path, ap_outage)
    assert {e["kind"] for e in base} == {"outage"}
    window = "  - {node: ap-centro-1, start: \"2026-10-31T19:00:00-05:00\", end: \"%s\", reason: firmware}\n"
    covered = replay_with(_config_with(tmp_path, "\nmaintenance:\n" + window % "2026-11-01T00:30:00Z"), "p.jsonl")
    assert [(e["event"], e["kind"]) for e in covered] == [(e["event"], "planned") for e in base]
    assert [e["affected_endpoints"] for e in covered] == [e["affected_endpoints"] for e in base]
    # the same window listed twice is one window, as the daemon keeps it
    twice = "\nmaintenance:\n" + window % "2026-11-01T00:30:00Z" + window % "2026-11-01T00:30:00Z"
    assert replay_with(_config_with(tmp_path, twice), "twice.jsonl") == covered
    ends = replay_with(_config_with(tmp_path, "\nmaintenance:\n" + window % "2026-11-01T00:10:00Z"), "e.jsonl")
    assert ends[0]["kind"] == "planned"
    upgraded = next(e for e in ends if e["kind"] == "outage")
    assert (upgraded["event"], upgraded["ts"]) == ("updated", "2026-11-01T00:10:00Z")


def test_a_burst_is_one_incident_with_its_odds_and_rates_shows_what_was_learned(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 19: 4 of the 10 ONUs on olt-arauca (40 %, under P) failing together while the OLT answers
    are one suspected incident, its learned rate and odds in ``detail``; ``--rates`` lists the rates
    the burst rule learned (here from one ONU failing alone earlier)."""
    inv = load_inventory(CONFIG)
    onus = sorted(t for t in inv.targets if inv.targets[t].parents == ("olt-arauca",))
    lone = _outcomes(tmp_path / "lone.jsonl", {onus[9]}, 120, 400, duration=1200)
    burst = _outcomes(tmp_path / "burst.jsonl", set(onus[:4]), 300, 900, duration=1800)
    # the burst an hour later: one failure in 20 minutes is a high rate for that hour of day (with
    # 4 of 10 the odds are 1.2e-9 then, not a burst), which the next hour shares only in part
    with (tmp_path / "in.jsonl").open("w") as f:
        f.write(lone.read_text())
        for line in burst.read_text().splitlines():
            rec = json.loads(line)
            rec["ts"] = format_ts(datetime.fromisoformat(rec["ts"]).timestamp() + 4200)
            f.write(json.dumps(rec) + "\n")
    events = _run(tmp_path, tmp_path / "in.jsonl", "--rates")
    opened = [e for e in events if e["event"] == "opened"]
    assert [(e["kind"], e["root"]) for e in opened] == [("single", onus[9]), ("suspected", "olt-arauca")]
    assert opened[1]["affected_endpoints"] == onus[:4]
    assert opened[1]["detail"].startswith("burst: 4 of 10 endpoints below olt-arauca within 60s; learned rate ")
    assert "at 01h UTC" in opened[1]["detail"]
    assert "odds of that from independent failures" in opened[1]["detail"]
    err = capsys.readouterr().err
    assert "learned failure rates" in err and "  olt-arauca: endpoints=10 failures=1 rate=" in err
    off = _run(tmp_path, tmp_path / "in.jsonl", "--set", "burst_odds=0", name="off.jsonl")
    assert [e["kind"] for e in off if e["event"] == "opened"] == ["single"] * 5  # the share rule alone
