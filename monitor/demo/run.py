"""``monitor demo [--output DIR] [--speed X]``: set up a throwaway ISP, play the story, summarise.

The run: copy the bundled inventory into ``<output>/config`` with local sinks (Maildir, ticket
folder), a free loopback /metrics port and the maintenance window at its real clock time; start the
unmodified :class:`~monitor.daemon.Daemon` with the scripted probe; narrate; stop once every
incident is resolved, every target is UP again and the outbox is empty; print and write the summary.
Exit 0 when the story completed, 1 when it did not within its deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import socket
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from monitor import logs
from monitor.correlate.store import IncidentStore
from monitor.delivery.outbox import Outbox
from monitor.demo import console, scenario
from monitor.errors import ConfigError
from monitor.inventory.loader import load_inventory
from monitor.state import State

if TYPE_CHECKING:
    from monitor.daemon import Daemon

HERE = Path(__file__).parent
DEFAULT_OUTPUT = "monitor-demo-output"
SPEEDS = (0.25, 4.0)
LEAD = 1.0  # seconds between writing the config and the story's time zero (daemon start-up)
GRACE = 45.0  # real seconds after the last fault by which everything must have settled


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="play a tower outage and more through the real pipeline (no root, no servers)")
    p.add_argument("--output", type=Path, help=f"new or empty folder for mail, tickets, state and log "
                                               f"(default: a new ./{DEFAULT_OUTPUT}[-N])")
    p.add_argument("--speed", type=float, default=1.0,
                   help=f"1 polls every second (about 35 s in all); 2 is twice as fast ({SPEEDS[0]:g}..{SPEEDS[1]:g})")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    if not SPEEDS[0] <= args.speed <= SPEEDS[1]:
        raise ConfigError(f"--speed: expected a number from {SPEEDS[0]:g} to {SPEEDS[1]:g}, got {args.speed:g}")
    return asyncio.run(Demo(output_folder(args.output), args.speed).run())


def output_folder(given: Path | None, cwd: Path | None = None) -> Path:
    """The given folder if new or empty; by default the first free ./monitor-demo-output[-N]."""
    if given is not None:
        if given.exists() and (not given.is_dir() or any(given.iterdir())):
            raise ConfigError(f"--output {given}: exists and is not an empty folder (remove it or choose another)")
        return given.absolute()
    base = (cwd or Path.cwd()) / DEFAULT_OUTPUT
    n = 1
    folder = base
    while folder.exists():
        n += 1
        folder = base.with_name(f"{DEFAULT_OUTPUT}-{n}")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


class Demo:
    def __init__(self, folder: Path, speed: float = 1.0, out: TextIO | None = None) -> None:
        self.folder = folder
        self.speed = speed
        self.out = out or sys.stdout
        self.story = scenario.load()
        self.mail = folder / "mail"
        self.tickets = folder / "tickets"
        self.config = folder / "config" / "sites.yaml"
        self.state = folder / "config" / "state" / "monitor.db"
        self.log = folder / "monitor.log"
        self.port = free_port()
        self.t0 = 0.0

    def write_config(self, t0: float) -> None:
        """The bundled inventory, made concrete for this run."""
        doc = yaml.safe_load((HERE / "sites.yaml").read_text(encoding="utf-8"))
        doc["polling"].update(interval=1.0 / self.speed, icmp_timeout=0.2 / self.speed)
        doc["daemon"]["metrics_listen"] = f"127.0.0.1:{self.port}"
        doc["delivery"]["maildir"] = {"path": str(self.mail), "from": "NOC Llanos Net <noc@isp.example>"}
        doc["delivery"]["desk"] = {"kind": "folder", "path": str(self.tickets)}
        doc["maintenance"] = [{"node": w.node, "start": _iso(t0 + w.start / self.speed),
                               "end": _iso(t0 + w.end / self.speed), "reason": w.reason}
                              for w in self.story.maintenance]
        self.config.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(HERE / "customers.csv", self.config.parent / "customers.csv")
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120)
        self.config.write_text("# Written by `monitor demo` from monitor/demo/sites.yaml for this run.\n" + text,
                               encoding="utf-8")

    def elapsed(self) -> float:
        return time.time() - self.t0

    async def run(self) -> int:
        from monitor.daemon import Daemon  # not at import: `monitor --help` stays quick

        self.folder.mkdir(parents=True, exist_ok=True)
        self.t0 = time.time() + LEAD
        self.write_config(self.t0)
        inv = load_inventory(self.config)
        self.story = scenario.load(targets=set(inv.targets))  # the bundled pair must agree
        probe = scenario.ScriptedProbe.started_at(self.story.outages(inv), self.t0, self.speed)
        daemon = Daemon(self.config, inventory=inv, probes=[probe])
        printer = console.Printer(self.out, inv, self.elapsed)
        daemon.incident_sinks.append(printer.incident_events)
        url = f"http://127.0.0.1:{self.port}/metrics"
        console.header(self.out, self.story, self.speed, self.folder, url)
        with self._daemon_log():
            task = asyncio.create_task(daemon.run())
            narrator = asyncio.create_task(self._narrate(printer))
            try:
                done = await self._until_settled(daemon, task, printer)
                metrics = await self._scrape(url) if done else "not scraped"
            finally:
                narrator.cancel()
                daemon.request_stop()
                await task
        s = self._summary()
        console.write_summary(self.folder / "summary.json", s)
        console.print_summary(self.out, s, self.elapsed(), metrics)
        if not done:
            print("monitor demo: the story did not complete in time (see the daemon log)", file=self.out)
            return 1
        return 0

    @contextlib.contextmanager
    def _daemon_log(self) -> Any:
        """The daemon's own log goes to a file: the console is for the story."""
        logger = logging.getLogger("monitor")
        handler = logging.FileHandler(self.log, encoding="utf-8")
        handler.setFormatter(logs.LogfmtFormatter())
        saved = (logger.handlers[:], logger.propagate, logger.level)
        logger.handlers[:], logger.propagate = [handler], False
        logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            handler.close()
            logger.handlers[:], logger.propagate = saved[0], saved[1]
            logger.setLevel(saved[2])

    async def _narrate(self, printer: console.Printer) -> None:
        """Announce each fault and each repair when the scripted probe makes it happen."""
        moments = sorted([(s.at, f"▶ {s.say}") for s in self.story.steps]
                         + [(s.end, f"◀ fixed: {', '.join(s.down)} answer{'s' if len(s.down) == 1 else ''} again")
                            for s in self.story.steps])
        for at, text in moments:
            await asyncio.sleep(max(0.0, at / self.speed - self.elapsed()))
            printer.line(text)

    async def _until_settled(self, daemon: Daemon, task: asyncio.Task[None], printer: console.Printer) -> bool:
        """True once the story is over and everything is calm twice in a row; False on deadline or stop."""
        last = max([self.story.end, *(w.end for w in self.story.maintenance)]) / self.speed
        calm = 0
        while self.elapsed() < last + GRACE:
            await asyncio.sleep(0.5)
            if task.done():
                return False
            if daemon.delivery is not None:
                printer.deliveries(daemon.delivery.outbox.rows(status="delivered"), self.mail, self.tickets)
            calm = calm + 1 if self.elapsed() > last and self._calm(daemon) else 0
            if calm >= 3:
                return True
        return False

    @staticmethod
    def _calm(daemon: Daemon) -> bool:
        if daemon.correlation is None or daemon.delivery is None:
            return False
        if daemon.correlation.store.incidents(status="open", limit=1):
            return False
        if any(st.state != State.UP for st in daemon.states.values()):
            return False
        return not any(n for n, _ in daemon.delivery.outbox.pending().values())

    async def _scrape(self, url: str) -> str:
        """Read /metrics once, as Prometheus would, and quote two numbers from it."""
        def get() -> str:
            with urllib.request.urlopen(url, timeout=5) as r:  # our own loopback port
                return str(r.read().decode())

        try:
            text = await asyncio.to_thread(get)
        except OSError as exc:
            return f"{url} did not answer: {exc}"
        total = {"monitor_polls_total": 0.0, "monitor_delivery_delivered_total": 0.0}
        for line in text.splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in total:
                total[name] += float(line.rsplit(" ", 1)[1])
        return (f"{url} answered while it ran: {total['monitor_polls_total']:.0f} polls, "
                f"{total['monitor_delivery_delivered_total']:.0f} deliveries")

    def _summary(self) -> dict[str, Any]:
        store, outbox = IncidentStore(self.state), Outbox(self.state)
        try:
            rows = sorted(store.incidents(status=None, limit=10_000), key=lambda r: r.id)
            return console.summary(rows, outbox.rows(status="delivered"), self.mail, self.tickets, self.state,
                                   self.config, self.log)
        finally:
            store.close()
            outbox.close()
