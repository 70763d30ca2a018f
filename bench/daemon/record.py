"""CPU per recorded poll on the ICMP batch path, without sockets or the event loop's waiting.

    .venv/bin/python bench/daemon/record.py --endpoints 20000 --reps 20

The daemon benchmark's generated network (``run.py``), every target restored UP, and a fake batch
probe answering each ``poll_many`` with canned replies: what is left is the polling stage's own
work per poll (``PollingStage._poll_many_and_record``: grouping by deadline, assessment, the state
step, metrics). No root needed; compare two checkouts by running each one's copy, alternated.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.daemon.run import write_inventory
from monitor.clock import SystemClock
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory, Target
from monitor.polling.stage import PollingStage
from monitor.probes.base import IcmpResult
from monitor.state import State, restored


class CannedBatch:
    """Every target answers 3 of 3 at once; no socket."""

    kind = "icmp"

    def __init__(self, inv: Inventory) -> None:
        self.replies = {t.id: IcmpResult(t.id, t.address, 3, 3, 1.0, 1.1, 1.2, 0.1) for t in inv.targets.values()}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def poll(self, target: Target, timeout: float) -> IcmpResult:
        return self.replies[target.id]

    async def poll_many(self, targets: Sequence[Target], timeout: float) -> list[IcmpResult]:
        return [self.replies[t.id] for t in targets]


async def measure(endpoints: int, reps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        inv = load_inventory(write_inventory(Path(tmp), endpoints, 60.0, "none"))
        stage = PollingStage(SystemClock(), probes=[CannedBatch(inv)])
        await stage.start_probes(inv)
        for tid in inv.targets:
            stage.states[tid] = restored(State.UP, 0.0)
        targets = [t for t in inv.targets.values() if t.address and t.snmp is None]
        await stage._poll_many_and_record(targets)  # warm up: metric children, confirmation rules
        cpu0 = time.process_time()
        for _ in range(reps):
            await stage._poll_many_and_record(targets)
        cpu = time.process_time() - cpu0
        print(f"{1e6 * cpu / (reps * len(targets)):.3f} µs CPU per recorded poll ({len(targets)} targets × {reps})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoints", type=int, default=20_000)
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    asyncio.run(measure(args.endpoints, args.reps))


if __name__ == "__main__":
    main()
