"""4 pollers x 25,000 endpoints into one core at a 60 s interval, over a real mosquitto on loopback (issue 14).

    .venv/bin/python -m bench.pollers.run [--pollers 4] [--endpoints 25000] [--rounds 3] [--steady 60]

The pollers are synthetic on the probing side only: no ICMP is sent (100,000 loopback targets would
measure the probes, which bench/daemon and bench/icmp do). Their confirmed changes enter the real
publishing code: :class:`monitor.remote.poller.Publisher` (the polling stage's sink in ``monitor
poll``), its :class:`~monitor.remote.spool.PollerSpool` (SQLite, fsync) and
:class:`~monitor.remote.link.PollerLink`, one of each per poller, all in this process. The core is
the real ``monitor run`` Daemon in its own process (bench/pollers/consumer.py), configured with
``pollers:`` covering every target, so it polls nothing and only takes the pollers' changes: CoreFeed,
validation, the event store, the zones' silence watch and the incident pipeline (correlation and its
store; no delivery is configured).

Each round, interleaved with a *floor* round (a bare aiomqtt subscriber in its own process taking the
same messages, decoding them and acknowledging: what any consumer pays for the transport):

1. steady: ``--steady`` seconds of churn, ``--churn`` changes a minute over all pollers (0.1 % of the
   endpoints per interval by default; one endpoint down, or one of those back up), each stamped
   with its confirmation time. Latency = when the core handed the change to correlation (floor:
   received it) minus that time. For the core also the *incident lateness*: when a ``single``
   incident opened minus (its confirmation + ``settle``), the wait the engine imposes by design
   (the same in one daemon); the pipeline correlates once a second, so up to 1 s of it is that tick.
2. burst: every target still up is confirmed DOWN by its poller in one event-loop turn (a core
   failure: every poller sees its whole zone fail), ~100,400 changes. Handled = the end of the
   pipeline step that correlated the last of them minus the confirmation (floor: the last one
   received). The outage must open once, with every endpoint. ``late``: how many of them reached
   correlation more than ``--settle`` after their confirmation. The engine takes those as late news
   (a poller's spool after an outage: kept in its late map, written with every step, incidents
   opened at the real start), and opens the outage with what has arrived by then and attaches the
   rest step by step: more work than one opening. With the default settle (a 60 s interval's, as a
   real core) none is late; a short ``--settle`` on a loaded machine makes most of them late.

Printed per round; then min/median/max over the rounds of each figure and of the ratio core/floor
of each pair of rounds. Core CPU is its process's (utime+stime from /proc), RSS its VmRSS after
the steady phase and its peak (VmHWM) at the end. ``--one-per-message`` publishes as the poller
did before Publisher (each change its own spool transaction and message), for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.remote.link import Broker, PollerLink, cancel_until_done
from monitor.remote.poller import Publisher
from monitor.remote.spool import PollerSpool
from monitor.state import State, StateChange
from monitor.store import EventStore
from tests.servers.common import until
from tests.servers.mosquitto import Mosquitto

FIRST = int(ipaddress.IPv4Address("127.100.0.1"))  # never probed: every target is a remote poller's
APS = 100  # per zone
HZ = os.sysconf("SC_CLK_TCK")


def write_config(folder: Path, pollers: int, per_zone: int, port: int, settle: float) -> Path:
    """One municipality, site, tower and zone (one poller) per poller; the NOC's gateway and the core router
    (below it) in zone 1."""
    ids = range(1, pollers + 1)
    lines = ["municipalities:", *(f"  - {{id: m{z}, name: Municipio {z}}}" for z in ids),
             "sites:", *(f"  - {{id: s{z}, municipality: m{z}, name: Torre {z}}}" for z in ids),
             "service_classes: {residencial: {response_hours: 24, availability_target: 98.0}}",
             "polling: {interval: 60}",
             f"correlation: {{settle: {settle:g}s}}",
             f"daemon: {{state_dir: {folder / 'var'}, metrics_listen: ''}}",
             "customers_file: customers.csv",
             "pollers:",
             f"  brokers: [{{host: 127.0.0.1, port: {port}}}]",
             "  zones:", *(f"    - {{id: z{z}, municipalities: [m{z}], pollers: [p-{z}]}}" for z in ids),
             "nodes:", "  - {id: gw, kind: router, address: 127.99.0.2, site: s1}",
             "  - {id: core, kind: router, address: 127.99.0.1, site: s1, parent: gw}"]
    for z in ids:
        lines.append(f"  - {{id: tower-{z}, kind: router, address: 127.99.{z}.1, site: s{z}, parent: core}}")
        lines += [f"  - {{id: ap-{z}-{a}, kind: ap, address: 127.98.{z}.{a + 1}, site: s{z}, parent: tower-{z}}}"
                  for a in range(APS)]
    (folder / "sites.yaml").write_text("\n".join(lines) + "\n")
    rows = ["customer_id,name,service_class,email,phone,language,endpoint_id,endpoint_kind,address,parent"]
    for z in ids:
        for k in range(per_zone):
            i = (z - 1) * per_zone + k
            rows.append(f"C{i},Cliente {i},residencial,,,es,cpe-{z}-{k},cpe,{ipaddress.IPv4Address(FIRST + i)},"
                        f"ap-{z}-{k % APS}")
    (folder / "customers.csv").write_text("\n".join(rows) + "\n")
    return folder / "sites.yaml"


def zone_targets(z: int, per_zone: int) -> list[str]:
    nodes = (["gw", "core"] if z == 1 else []) + [f"tower-{z}"] + [f"ap-{z}-{a}" for a in range(APS)]
    return nodes + [f"cpe-{z}-{k}" for k in range(per_zone)]


def seed_up(path: Path, targets: Sequence[str]) -> None:
    """Every target UP in the core's store: the steady state of a network that answers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    store = EventStore(path)
    now = time.time()
    store.append([StateChange(t, State.UNKNOWN, State.UP, now - 3600, "bench seed") for t in targets])
    store.close()


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def mem_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


@dataclass
class Poller:
    """One synthetic poller: the real spool, link and publisher; its zone's targets and their states."""

    zone: int
    spool: PollerSpool
    link: PollerLink
    publish: Publisher
    one_per_message: bool
    up: list[str]
    down: list[str] = field(default_factory=list)

    def confirm(self, change: StateChange) -> None:
        if self.one_per_message:  # the poller before Publisher: a transaction and a message per change
            self.spool.add([change])
            self.link.added()
        else:
            self.publish(change)


@dataclass
class Round:
    mode: str
    steady_latency: list[float] = field(default_factory=list)  # s, confirmation -> correlation (floor: received)
    lateness: list[float] = field(default_factory=list)  # s, single opened - (confirmation + settle)
    steady_cpu: float = 0.0  # % of one core
    rss: float = 0.0  # MB after the steady phase
    hwm: float = 0.0  # MB peak
    burst: int = 0
    burst_taken: float = 0.0  # s, confirmation -> last change handed to correlation (floor: received)
    burst_handled: float = 0.0  # s, -> end of the step that correlated it (floor: = taken)
    burst_cpu: float = 0.0  # CPU s from the burst to the outage opened (floor: to the last ack)
    burst_cpu_taken: float = 0.0  # CPU s from the burst to every change acknowledged
    burst_in_messages: tuple[float, float] = (0.0, 0.0)  # core: wall and CPU s taking the burst's messages
    burst_in_steps: tuple[float, float] = (0.0, 0.0)  # core: wall and CPU s of the steps that correlated it
    outage: str = ""
    burst_at: float = 0.0  # wall time the burst was confirmed
    burst_late: int = 0  # burst changes handed to correlation more than settle after their confirmation

    def line(self) -> str:
        s = (f"{self.mode}: steady changes={len(self.steady_latency)} latency p50={pct(self.steady_latency, .5):.3f}s "
             f"p99={pct(self.steady_latency, .99):.3f}s max={max(self.steady_latency, default=0):.3f}s "
             f"cpu={self.steady_cpu:.1f}% rss={self.rss:.0f}MB")
        if self.mode == "core":
            s += (f" | incident lateness beyond settle n={len(self.lateness)} p50={pct(self.lateness, .5):.3f}s "
                  f"p99={pct(self.lateness, .99):.3f}s")
        s += (f" | burst changes={self.burst:,} late={self.burst_late:,} taken={self.burst_taken:.2f}s "
              f"handled={self.burst_handled:.2f}s "
              f"cpu_to_acked={self.burst_cpu_taken:.2f}s cpu_to_outage={self.burst_cpu:.2f}s peak_rss={self.hwm:.0f}MB")
        if self.mode == "core":
            s += (f" in_messages={self.burst_in_messages[0]:.2f}s/{self.burst_in_messages[1]:.2f}s_cpu"
                  f" in_steps={self.burst_in_steps[0]:.2f}s/{self.burst_in_steps[1]:.2f}s_cpu")
        return s + (f" outage={self.outage}" if self.outage else "")


async def read_lines(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        into.append(line.decode().strip())


async def one_round(mode: str, args: argparse.Namespace, tmp: Path) -> Round:
    (tmp / "mqtt").mkdir()
    broker = Mosquitto(tmp / "mqtt")
    broker.start()
    cfg = write_config(tmp, args.pollers, args.endpoints, broker.port, args.settle)
    zones = {z: zone_targets(z, args.endpoints) for z in range(1, args.pollers + 1)}
    if mode == "core":
        seed_up(tmp / "var" / "monitor.db", [t for ts in zones.values() for t in ts])
    results = tmp / "results.json"
    argv = [sys.executable, "-m", "bench.pollers.consumer", mode, str(cfg if mode == "core" else broker.port),
            str(results)]
    with (tmp / "consumer.log").open("wb") as err:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    lines: list[str] = []
    reader = asyncio.create_task(read_lines(proc.stdout, lines))
    pollers: list[Poller] = []
    tasks: list[asyncio.Task[None]] = []
    out = Round(mode)
    try:
        await until(lambda: "ready" in lines, 600, f"the {mode} to subscribe")
        for z, targets in zones.items():
            spool = PollerSpool(tmp / f"spool-{z}.db", f"p-{z}", f"z{z}")
            link = PollerLink(spool, [Broker("127.0.0.1", broker.port)], heartbeat=10.0, resend_after=30.0)
            pollers.append(Poller(z, spool, link, Publisher(spool, link), args.one_per_message,
                                  [t for t in targets if t.startswith("cpe-")]))
            tasks += [asyncio.create_task(link.run()), asyncio.create_task(pollers[-1].publish.run())]
        await until(lambda: all(p.link.connected.is_set() for p in pollers), 60, "pollers connected")
        await steady(pollers, args, proc.pid, out)
        await burst(pollers, zones, args, proc.pid, out, lines)
        out.hwm = mem_mb(proc.pid, "VmHWM")
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 300)
        data = json.loads(results.read_text())
        account(out, data, args)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        reader.cancel()
        for t in tasks:
            await cancel_until_done(t)
        for p in pollers:
            p.spool.close()
        broker.stop()
    return out


def drained(pollers: list[Poller]) -> bool:
    """Every confirmed change spooled and acknowledged by the consumer."""
    return all(not p.publish.pending and p.spool.backlog() == 0 for p in pollers)


async def steady(pollers: list[Poller], args: argparse.Namespace, pid: int, out: Round) -> None:
    rng = random.Random(14)
    gap = 60.0 / args.churn
    loop = asyncio.get_running_loop()
    cpu0, t0 = cpu_s(pid), loop.time()
    n = 0
    while loop.time() - t0 < args.steady:
        p = pollers[n % len(pollers)]
        now = time.time()
        if p.down and rng.random() < 0.5:
            t = p.down.pop(rng.randrange(len(p.down)))
            p.up.append(t)
            p.confirm(StateChange(t, State.DOWN, State.UP, now, "answers again"))
        else:
            t = p.up.pop(rng.randrange(len(p.up)))
            p.down.append(t)
            p.confirm(StateChange(t, State.UP, State.DOWN, now, "3 consecutive failed polls: timeout"))
        n += 1
        await asyncio.sleep(max(0.0, t0 + n * gap - loop.time()))
    out.steady_cpu = 100 * (cpu_s(pid) - cpu0) / (loop.time() - t0)
    out.rss = mem_mb(pid, "VmRSS")
    await until(lambda: drained(pollers), 120, "steady changes acknowledged")
    if out.mode == "core":
        await asyncio.sleep(args.settle + 3)  # the last singles open (their lateness is measured)


async def burst(pollers: list[Poller], zones: dict[int, list[str]], args: argparse.Namespace, pid: int,
                out: Round, lines: list[str]) -> None:
    cpu0, now = cpu_s(pid), time.time()
    out.burst_at = now
    for p in pollers:  # one loop turn: every poller confirms its whole zone down
        down = {*p.down, "gw"}  # the NOC's gateway answers: the core router is the root
        for t in zones[p.zone]:
            if t not in down:
                p.confirm(StateChange(t, State.UP, State.DOWN, now, "3 consecutive failed polls: timeout"))
                out.burst += 1
    await until(lambda: drained(pollers), 600, "the burst acknowledged")
    out.burst_cpu_taken = cpu_s(pid) - cpu0
    if out.mode == "core":
        await until(lambda: any('"outage"' in line for line in lines), args.settle + 300,
                    f"the outage opened (incident events: {lines[1:4]})")
    out.burst_cpu = cpu_s(pid) - cpu0


def account(out: Round, data: dict[str, Any], args: argparse.Namespace) -> None:
    start = out.burst_at
    changes = data["changes"]
    steady_rows = [c for c in changes if c[1] < start]
    burst_rows = [c for c in changes if c[1] >= start]
    out.steady_latency = [wall - ts for _, ts, wall in steady_rows]
    if burst_rows:
        last = max(wall for _, _, wall in burst_rows)
        out.burst_taken = last - start
        out.burst_late = sum(wall - ts > args.settle for _, ts, wall in burst_rows)
        ends = [end for begin, end, *_ in data["steps"] if begin >= last]
        out.burst_handled = (min(ends) if ends else last) - start
        inside = [(end - begin, cpu) for begin, end, cpu in data["messages"] if begin >= start]
        out.burst_in_messages = (sum(w for w, _ in inside), sum(c for _, c in inside))
        steps = [(end - begin, cpu) for begin, end, _, cpu in data["steps"] if start <= begin <= last]
        out.burst_in_steps = (sum(w for w, _ in steps), sum(c for _, c in steps))
    changed: dict[str, list[float]] = {}  # target -> its changes' confirmation times (the steady churn)
    for target, ts, _ in steady_rows:
        changed.setdefault(target, []).append(ts)
    for event, kind, root, _, wall, _ in data["events"]:  # a target changed once (went down): unambiguous
        if event == "opened" and kind == "single" and len(changed.get(root, ())) == 1:
            out.lateness.append(wall - (changed[root][0] + args.settle))
    opened = [e for e in data["events"] if e[0] == "opened" and e[1] != "single"]
    out.outage = ",".join(f"{kind}@{root}:{n:,}" for _, kind, root, _, _, n in opened)


def summary(name: str, values: Sequence[float], unit: str = "") -> str:
    if not values:
        return f"{name}: -"
    return (f"{name}: min {min(values):.3f}{unit} / median {statistics.median(values):.3f}{unit} / "
            f"max {max(values):.3f}{unit}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--pollers", type=int, default=4, choices=range(1, 10), metavar="N")
    ap.add_argument("--endpoints", type=int, default=25000, help="per poller")
    ap.add_argument("--rounds", type=int, default=3, help="core rounds, each followed by a floor round")
    ap.add_argument("--steady", type=float, default=60.0, help="s of steady churn")
    ap.add_argument("--churn", type=float, default=100.0, help="changes a minute over all pollers")
    ap.add_argument("--settle", type=float, default=60.0,
                    help="correlation settle, s (the default is a 60 s interval's; a burst the core takes longer "
                         "than this to receive is judged as late news, in parts: other work)")
    ap.add_argument("--one-per-message", action="store_true", help="publish as before Publisher")
    args = ap.parse_args()
    pairs: list[tuple[Round, Round]] = []
    for i in range(args.rounds):
        done = []
        for mode in ("core", "floor") if i % 2 == 0 else ("floor", "core"):
            with tempfile.TemporaryDirectory(prefix="bench-pollers-") as d:
                r = await one_round(mode, args, Path(d))
            load = os.getloadavg()[0]
            print(f"round {i + 1} {r.line()} load={load:.1f}", flush=True)
            done.append(r)
        core, floor = sorted(done, key=lambda r: r.mode)
        pairs.append((core, floor))
    cores = [c for c, _ in pairs]
    print(summary("core steady latency p99", [pct(c.steady_latency, .99) for c in cores], "s"))
    print(summary("core incident lateness beyond settle p99", [pct(c.lateness, .99) for c in cores], "s"))
    print(summary("core steady CPU", [c.steady_cpu for c in cores], "%"))
    print(summary("core RSS after steady", [c.rss for c in cores], "MB"))
    print(summary("core peak RSS", [c.hwm for c in cores], "MB"))
    print(summary("core burst handled", [c.burst_handled for c in cores], "s"))
    print(summary("core burst CPU to every change acknowledged", [c.burst_cpu_taken for c in cores], "s"))
    print(summary("core burst CPU to the outage opened (settle ticks included)", [c.burst_cpu for c in cores], "s"))
    print(summary("core burst CPU in its messages + correlation steps",
                  [c.burst_in_messages[1] + c.burst_in_steps[1] for c in cores], "s"))
    print(summary("ratio core/floor steady latency p99", [pct(c.steady_latency, .99) / pct(f.steady_latency, .99)
                                                         for c, f in pairs]))
    print(summary("ratio core/floor burst (handled / last received)", [c.burst_handled / f.burst_taken
                                                                       for c, f in pairs if f.burst_taken]))
    print(summary("ratio core/floor steady CPU", [c.steady_cpu / f.steady_cpu for c, f in pairs if f.steady_cpu]))
    print(summary("ratio core/floor burst CPU to acknowledged", [c.burst_cpu_taken / f.burst_cpu_taken
                                                                for c, f in pairs if f.burst_cpu_taken]))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
