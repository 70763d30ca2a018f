"""Correlation benchmark: 100,000 endpoints, a core failure, and replay throughput.

    .venv/bin/python -m bench.correlate.run [--aps 200] [--cpes 500] [--cycles 10]

Prints: topology build time, CPU ms for the core-failure burst through the pure engine and
through the CorrelationService (SQLite, one transaction per step), each fed one change at a time
(as replay does) and in 1 s batches (as the daemon does), incidents opened (must be 1), every
endpoint failing below answering nodes with no cause, dying gasp and LOS (one incident each),
peak RSS of the process, and `monitor replay` lines/s on a generated outcomes file.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from monitor.clock import ManualClock
from monitor.correlate.engine import Engine
from monitor.correlate.incidents import IncidentEvent, format_ts
from monitor.correlate.service import CorrelationService
from monitor.correlate.settings import CorrelationSettings
from monitor.correlate.topology import Topology
from monitor.inventory.model import Inventory
from monitor.replay import replay
from monitor.state import State, StateChange
from tests.correlate_helpers import tree_inventory

T0 = 1_793_491_200.0
OneChange = Callable[[StateChange | None, float | None], list[IncidentEvent]]  # (change, None) or (None, tick time)
OneBatch = Callable[[list[StateChange], float], list[IncidentEvent]]  # a second's changes, then its tick


def _burst(inv: Inventory, interval: float) -> list[StateChange]:
    """Every target but the gateway confirmed down once, in random order, over one poll interval."""
    ids = [t for t in inv.targets if t != "gw"]
    random.Random(1).shuffle(ids)
    return [StateChange(t, State.UP, State.DOWN, T0 + interval * i / len(ids), "3 consecutive failed polls")
            for i, t in enumerate(ids)]


def _feed(apply_and_tick: OneChange, burst: list[StateChange], interval: float) -> tuple[float, list[IncidentEvent]]:
    """Feed changes one at a time, ticking once per virtual second; return CPU ms and events."""
    events: list[IncidentEvent] = []
    cpu = time.process_time()
    next_tick = T0 + 1
    for c in burst:
        while c.ts >= next_tick:
            events += apply_and_tick(None, next_tick)
            next_tick += 1
        events += apply_and_tick(c, None)
    end = T0 + 4 * interval
    while next_tick <= end:
        events += apply_and_tick(None, next_tick)
        next_tick += 1
    return (time.process_time() - cpu) * 1000, events


def _feed_batched(step: OneBatch, burst: list[StateChange], interval: float) -> tuple[float, list[IncidentEvent]]:
    """Feed changes as the daemon does: what was confirmed during each second, as one batch at its end."""
    events: list[IncidentEvent] = []
    cpu = time.process_time()
    next_tick, i, end = T0 + 1, 0, T0 + 4 * interval
    while next_tick <= end:
        j = i
        while j < len(burst) and burst[j].ts < next_tick:
            j += 1
        events += step(burst[i:j], next_tick)
        i = j
        next_tick += 1
    return (time.process_time() - cpu) * 1000, events


def _rss_mb() -> float:
    """Current resident set (not the peak): to see what one burst adds."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _report(label: str, ms: float, events: list[IncidentEvent]) -> None:
    opened = [e for e in events if e.event == "opened"]
    print(f"{label}: {ms:.0f} ms CPU; incidents opened: {len(opened)} "
          f"({', '.join(f'{e.kind}@{e.root}' for e in opened)}); events: {len(events)}; "
          f"endpoints in the last event: {len(events[-1].affected_endpoints):,}")


def bench_engine(inv: Inventory, settings: CorrelationSettings) -> None:
    t = time.process_time()
    topo = Topology.from_inventory(inv)
    print(f"topology build: {(time.process_time() - t) * 1000:.0f} ms CPU for {len(topo):,} targets")
    burst = _burst(inv, settings.interval)
    engine = Engine(topo, settings, start=T0)

    def step(c: StateChange | None, now: float | None) -> list[IncidentEvent]:
        if c is not None:
            engine.apply(c)
            return engine.tick(c.ts) if engine.has_output() else []
        assert now is not None
        return engine.tick(now)

    _report(f"engine burst, {len(burst):,} changes one at a time (as replay)", *_feed(step, burst, settings.interval))
    del engine, step
    before = _rss_mb()
    engine = Engine(topo, settings, start=T0)

    def step_batch(batch: list[StateChange], now: float) -> list[IncidentEvent]:
        engine.apply_many(batch)
        return engine.tick(now)

    _report("engine burst, 1 s batches (as the daemon)", *_feed_batched(step_batch, burst, settings.interval))
    print(f"RSS the engine holds after the burst (one outage, 100k attached): +{_rss_mb() - before:.0f} MB")


def bench_causes(inv: Inventory, settings: CorrelationSettings) -> None:
    """Every endpoint failing below nodes that answer, with each cause a subscriber table reports
    (issue 17): none (a mass incident by share), dying gasp (a city-wide power cut), LOS (a fibre cut)."""
    topo = Topology.from_inventory(inv)
    eps = [t for t in inv.targets if t in topo.endpoint]
    random.Random(2).shuffle(eps)
    for cause in (None, "dying_gasp", "los"):
        burst = [StateChange(t, State.UP, State.DOWN, T0 + settings.interval * i / len(eps), "offline", cause=cause)
                 for i, t in enumerate(eps)]
        engine = Engine(topo, settings, start=T0)

        def step_batch(batch: list[StateChange], now: float, engine: Engine = engine) -> list[IncidentEvent]:
            engine.apply_many(batch)
            return engine.tick(now)

        _report(f"every endpoint down, cause {cause or 'none'}, 1 s batches",
                *_feed_batched(step_batch, burst, settings.interval))


def bench_service(inv: Inventory, settings: CorrelationSettings) -> None:
    burst = _burst(inv, settings.interval)
    _service_run(inv, settings, burst, batched=True)
    _service_run(inv, settings, burst, batched=False)


def _service_run(inv: Inventory, settings: CorrelationSettings, burst: list[StateChange], *, batched: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clock = ManualClock(T0)
        svc = CorrelationService(inv, Path(tmp) / "monitor.db", settings, clock)

        def step_batch(batch: list[StateChange], now: float) -> list[IncidentEvent]:
            clock.set(now)
            return svc.on_state_changes(batch) if batch else svc.tick(now)

        def step(c: StateChange | None, now: float | None) -> list[IncidentEvent]:
            if c is not None:
                return svc.on_state_changes([c])
            assert now is not None
            clock.set(now)
            return svc.tick(now)

        if batched:
            _report("service burst (SQLite), 1 s batches (as the daemon)",
                    *_feed_batched(step_batch, burst, settings.interval))
        else:
            _report("service burst (SQLite), one change per call", *_feed(step, burst, settings.interval))
        svc.close()


def write_replay_input(path: Path, inv: Inventory, settings: CorrelationSettings, cycles: int) -> int:
    """One line per target per poll cycle, every target but the gateway failing in the middle third."""
    ids = list(inv.targets)
    n = len(ids)
    fail_from = T0 + settings.interval * (cycles // 3)
    fail_to = T0 + settings.interval * (2 * cycles // 3)
    with path.open("w") as f:
        for k in range(cycles):
            for i, tid in enumerate(ids):
                ts = T0 + k * settings.interval + int(settings.interval * i / n)
                ok = tid == "gw" or not (fail_from <= ts < fail_to)
                f.write(json.dumps({"ts": format_ts(ts), "target": tid, "ok": ok, "rtt_ms": 4.2}) + "\n")
    return cycles * n


def bench_replay(inv: Inventory, settings: CorrelationSettings, cycles: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "outcomes.jsonl"
        lines = write_replay_input(path, inv, settings, cycles)
        topo = Topology.from_inventory(inv)
        wall, cpu = time.perf_counter(), time.process_time()
        with path.open() as f:
            events = list(replay(inv, settings, f, topology=topo))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        opened = [e for e in events if e.event == "opened"]
        print(f"replay: {lines:,} lines in {wall:.2f} s wall / {cpu:.2f} s CPU = {lines / wall:,.0f} lines/s; "
              f"incidents opened: {len(opened)} ({', '.join(f'{e.kind}@{e.root}' for e in opened)})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--towers", type=int, default=10)
    ap.add_argument("--aps", type=int, default=20, help="APs per tower")
    ap.add_argument("--cpes", type=int, default=500, help="CPEs per AP")
    ap.add_argument("--cycles", type=int, default=10, help="poll cycles in the replay input")
    ap.add_argument("--skip-service", action="store_true")
    args = ap.parse_args()
    t = time.process_time()
    inv = tree_inventory(args.towers, args.aps, args.cpes, gateway=True)  # gw answers: the core is the root
    print(f"inventory: {len(inv.endpoints()):,} endpoints, {len(inv.nodes())} nodes "
          f"({(time.process_time() - t) * 1000:.0f} ms to build)")
    settings = CorrelationSettings.for_interval(60).with_overrides({"blind_share": "1"})
    bench_engine(inv, settings)
    bench_causes(inv, settings)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS after inventory + topology + engine burst: {rss:.0f} MB")
    if not args.skip_service:
        bench_service(inv, settings)
    bench_replay(inv, settings, args.cycles)
    print(f"peak RSS overall: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
