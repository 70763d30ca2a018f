"""The core's intake of a poller burst alone, in one process: what ``CoreFeed`` does per message minus MQTT.

    .venv/bin/python -m bench.pollers.intake [--pollers 4] [--endpoints 25000] [--rounds 5]

The same network as bench/pollers (4 zones of one poller, 25,000 endpoints each, every target UP in
the store); every target but the NOC's gateway confirmed DOWN, encoded as the pollers publish it
(messages of 5,000 changes). Timed per round, CPU of this process: each message decoded and
validated (:func:`monitor.remote.messages.decode`) and taken by :class:`monitor.remote.core.RemoteIntake`
(vantage rules, the event store's inserts in one transaction a message, the live states, metrics),
handing each change to a no-op sink where the daemon's correlation would be. Each round on a fresh
copy of the seeded store. What bench/pollers calls "taking the messages", without the MQTT client,
the numbering file and the bench's own timing hooks, so a change of it shows above the noise.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.pollers.run import seed_up, write_config, zone_targets
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory
from monitor.remote.core import RemoteIntake
from monitor.remote.messages import MAX_CHANGES, PollerMessage, decode, encode
from monitor.state import State, StateChange, TargetState
from monitor.store import EventStore


def messages(pollers: int, per_zone: int, now: float) -> list[tuple[str, bytes]]:
    out = []
    for z in range(1, pollers + 1):
        targets = [t for t in zone_targets(z, per_zone) if t != "gw"]
        changes = [StateChange(t, State.UP, State.DOWN, now + i * 1e-6, "3 consecutive failed polls: timeout")
                   for i, t in enumerate(targets)]
        for seq, k in enumerate(range(0, len(changes), MAX_CHANGES), start=1):
            msg = PollerMessage("changes", f"p-{z}", f"z{z}", seq, now, tuple(changes[k:k + MAX_CHANGES]))
            out.append((f"p-{z}", encode(msg)))
    return out


async def one_round(inv: Inventory, folder: Path, seeded: Path, msgs: list[tuple[str, bytes]]
                    ) -> tuple[float, float, int]:
    """(decode CPU s, intake CPU s, changes) for the whole burst on a fresh copy of the seeded store."""
    var = folder / "round"
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir()
    for f in seeded.parent.iterdir():
        shutil.copy(f, var / f.name)
    assert inv.pollers is not None
    store = EventStore(var / seeded.name)
    states: dict[str, TargetState] = {}
    taken: list[StateChange] = []
    intake = RemoteIntake(inv, store, states, taken.append, var)
    zone_of, poller_zones = inv.pollers.zone_of, inv.pollers.poller_zones()
    gc.collect()
    gc.freeze()  # as the daemon does once started (monitor/daemon.py): the inventory is not traversed again
    decoding = taking = 0.0
    for poller, data in msgs:
        t0 = time.process_time()
        msg = decode(data, zone_of, poller_zones)
        t1 = time.process_time()
        await intake.on_changes(poller, msg.changes)
        t2 = time.process_time()
        decoding += t1 - t0
        taking += t2 - t1
    store.close()
    gc.unfreeze()
    return decoding, taking, len(taken)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pollers", type=int, default=4)
    ap.add_argument("--endpoints", type=int, default=25000, help="per poller")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the intake's 21 WARNING lines a burst: not what is measured
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        folder = Path(tmp)
        write_config(folder, args.pollers, args.endpoints, 1883, 10.0)
        seeded = folder / "var" / "monitor.db"
        seed_up(seeded, [t for z in range(1, args.pollers + 1) for t in zone_targets(z, args.endpoints)])
        msgs = messages(args.pollers, args.endpoints, time.time())
        inv = load_inventory(folder / "sites.yaml")
        totals = []
        for r in range(1, args.rounds + 1):
            decoding, taking, n = asyncio.run(one_round(inv, folder, seeded, msgs))
            totals.append(decoding + taking)
            print(f"round {r}: {n:,} changes in {len(msgs)} messages: decode+validate {decoding:.3f} s CPU, "
                  f"intake {taking:.3f} s CPU, total {decoding + taking:.3f} s = "
                  f"{(decoding + taking) / n * 1e6:.1f} us a change", flush=True)
        print(f"total CPU: min {min(totals):.3f} / median {statistics.median(totals):.3f} / max {max(totals):.3f} s")


if __name__ == "__main__":
    main()
