"""``monitor replay`` against the JSON-decode floor of its own input, interleaved and repeated.

    .venv/bin/python -m bench.correlate.replay_floor [--rounds 5] [--cycles 10]
    valgrind --tool=cachegrind --cache-sim=no .venv/bin/python -m bench.correlate.replay_floor --part replay
    (and --part floor, --part none: the set-up alone, to subtract)

The input is bench/correlate/run.py's: 100,211 targets (10 towers x 20 APs x 500 CPEs), one line per
target per poll cycle, the core failing for the middle third of the cycles (one outage of 100k).

The anchor ("floor") is what no replay can beat with the standard library: reading the same file
and ``json.loads`` on every line, nothing else. Each round runs the floor, the replay and the
floor with msgspec's schemaless decoder (what a fast JSON library alone costs), in that order, so
load from other processes falls on all of them; CPU seconds of this process (``process_time``) are
compared, not wall time (the machine is shared). Prints per round and min/median/max of the
ratios replay/floor in lines per CPU second (1.0 = as fast as decoding the input).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from bench.correlate.run import write_replay_input
from monitor.correlate.settings import CorrelationSettings
from monitor.correlate.topology import Topology
from monitor.replay import replay
from tests.correlate_helpers import tree_inventory


def floor(path: Path, loads: Callable[[str], object] = json.loads) -> int:
    """Read the file and decode every line with ``loads``, nothing else."""
    n = 0
    with path.open() as f:
        for line in f:
            loads(line)
            n += 1
    return n


def cpu(fn: Callable[[], object]) -> float:
    gc.collect()
    t = time.process_time()
    fn()
    return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--towers", type=int, default=10)
    ap.add_argument("--part", choices=["floor", "replay", "none"], help="run one part once (for cachegrind)")
    args = ap.parse_args()
    inv = tree_inventory(args.towers, 20, 500, gateway=True)
    settings = CorrelationSettings.for_interval(60).with_overrides({"blind_share": "1"})
    topo = Topology.from_inventory(inv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "outcomes.jsonl"
        lines = write_replay_input(path, inv, settings, args.cycles)

        def run_replay() -> None:
            with path.open() as f:
                events = list(replay(inv, settings, f, topology=topo))
            assert sum(e.event == "opened" for e in events) == 1, "the bench's outage must open one incident"

        if args.part is not None:
            parts: dict[str, Callable[[], object]] = {"floor": lambda: floor(path), "replay": run_replay,
                                                      "none": lambda: None}
            parts[args.part]()
            return
        print(f"input: {lines:,} lines, {path.stat().st_size / 1e6:.1f} MB; CPU seconds per part, interleaved")
        ratios, ratios_ms, rates = [], [], []
        for k in range(args.rounds):
            f = cpu(lambda: floor(path))
            r = cpu(run_replay)
            m = cpu(lambda: floor(path, msgspec.json.Decoder().decode))
            ratios.append(f / r)
            ratios_ms.append(m / r)
            rates.append(lines / r)
            print(f"round {k + 1}: floor (json.loads) {f:.2f} s = {lines / f:,.0f} lines/s | replay {r:.2f} s = "
                  f"{lines / r:,.0f} lines/s | msgspec decode alone {m:.2f} s | replay/floor {f / r:.2f}x")

        def mmm(xs: list[float], fmt: str) -> str:
            return " / ".join(format(x, fmt) for x in (min(xs), statistics.median(xs), max(xs)))

        print(f"replay lines per CPU second, min/median/max: {mmm(rates, ',.0f')}")
        print(f"replay / JSON-decode floor (json.loads), min/median/max: {mmm(ratios, '.2f')}x")
        print(f"replay / msgspec decode alone, min/median/max: {mmm(ratios_ms, '.2f')}x")


if __name__ == "__main__":
    main()
