"""The receiving side of bench/pollers, run in its own process so its CPU and RSS are its own.

    python -m bench.pollers.consumer core CONFIG RESULTS    # the real core: monitor run's Daemon
    python -m bench.pollers.consumer floor PORT RESULTS     # the transport floor: a bare aiomqtt subscriber

``core`` runs :class:`monitor.daemon.Daemon` on CONFIG (its ``pollers:`` cover every target, so it
polls nothing itself and sends no probe): CoreFeed, RemoteIntake (event store), BlindZones and the
incident pipeline, as ``monitor run`` does, logging to stderr. Instrumentation only, no behaviour
changed: each change handed to correlation (``Daemon._correlate``) and each pipeline step
(``IncidentPipeline.correlate_now``) and each changes message taken (``CoreFeed._handle``: decoded,
validated, stored, acknowledged) is timed (wall and thread CPU), and an incident sink records every
lifecycle event.

``floor`` is what any consumer of the same messages must pay: one aiomqtt client subscribed to the
pollers' ``changes`` topics with QoS 1 on a persistent session, decoding each message's JSON and
acknowledging on ``acked`` (the highest number seen) once its queue is empty, like the core, so the
pollers' side works alike in both. No validation, no store, no correlation.

Both print ``ready`` once subscribed and, for the core, one JSON line per incident event that is not
a ``single``; on SIGTERM they stop and write RESULTS (JSON): ``changes`` [target, ts, wall] (handed
to correlation, or received), ``steps`` [start, end, changes, cpu], ``events`` [event, kind, root, ts,
wall, endpoints], ``messages`` [start, end, cpu] (the core's).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt

from monitor import logs
from monitor.correlate.incidents import IncidentEvent
from monitor.daemon import Daemon
from monitor.inventory.loader import load_inventory
from monitor.pipeline import IncidentPipeline
from monitor.remote.link import CoreFeed
from monitor.state import StateChange

Row = list[Any]


async def core(config: Path) -> dict[str, list[Row]]:
    inv = load_inventory(config)
    logs.setup(inv.daemon.log_format, inv.daemon.log_level)
    changes: list[Row] = []
    steps: list[Row] = []
    events: list[Row] = []
    messages: list[Row] = []
    correlate, step = Daemon._correlate, IncidentPipeline.correlate_now

    def timed_correlate(self: Daemon, change: StateChange) -> None:
        changes.append([change.target, change.ts, time.time()])
        correlate(self, change)

    def timed_step(self: IncidentPipeline, *, force: bool = False) -> None:
        n, start, cpu = len(self._pending), time.time(), time.thread_time()
        step(self, force=force)
        if n:
            steps.append([start, time.time(), n, time.thread_time() - cpu])

    handle = CoreFeed._handle

    async def timed_handle(self: CoreFeed, message: aiomqtt.Message, where: str = "") -> str | None:
        start, cpu = time.time(), time.thread_time()
        try:
            return await handle(self, message, where)
        finally:
            if str(message.topic).endswith("/changes"):
                messages.append([start, time.time(), time.thread_time() - cpu])

    Daemon._correlate = timed_correlate  # type: ignore[method-assign]
    IncidentPipeline.correlate_now = timed_step  # type: ignore[method-assign]
    CoreFeed._handle = timed_handle  # type: ignore[method-assign]

    def sink(evs: list[IncidentEvent]) -> None:
        wall = time.time()
        for e in evs:
            events.append([e.event, e.kind, e.root, e.ts, wall, len(e.affected_endpoints)])
            if e.kind != "single":
                print(json.dumps(events[-1]), flush=True)

    daemon = Daemon(config, inventory=inv)
    daemon.incident_sinks.append(sink)
    task = asyncio.create_task(daemon.run())
    await daemon.ready.wait()
    assert daemon.feed is not None
    await daemon.feed.connected.wait()
    print("ready", flush=True)
    await task  # SIGTERM: the daemon's own handler stops it
    return {"changes": changes, "steps": steps, "events": events, "messages": messages}


async def floor(port: int, prefix: str = "monitor/pollers") -> dict[str, list[Row]]:
    changes: list[Row] = []
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def take(client: aiomqtt.Client) -> None:
        seen: dict[str, int] = {}
        async for m in client.messages:
            wall = time.time()
            raw = m.payload
            body = json.loads(bytes(raw) if isinstance(raw, bytes | bytearray) else b"{}")
            changes.extend([c["target"], c["ts"], wall] for c in body["changes"])
            seen[body["poller"]] = max(seen.get(body["poller"], 0), body["seq"])
            if not len(client.messages):
                for poller, seq in seen.items():
                    await client.publish(f"{prefix}/{poller}/acked", str(seq).encode(), qos=1, retain=True)

    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-floor", clean_session=False) as client:
        await client.subscribe(f"{prefix}/+/changes", qos=1)
        print("ready", flush=True)
        taking = asyncio.create_task(take(client))
        await stop.wait()
        taking.cancel()
    return {"changes": changes, "steps": [], "events": [], "messages": []}


def main() -> None:
    mode, where, results = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    out = asyncio.run(core(Path(where)) if mode == "core" else floor(int(where)))
    results.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
