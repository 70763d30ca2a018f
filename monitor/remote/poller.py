"""``monitor poll``: the poller role, the polling stage alone for one zone, publishing to the core.

It polls the targets of its zone (``pollers:`` in the shared config) with the same stage as the
daemon (:class:`~monitor.polling.stage.PollingStage`: probes, confirmed states, its own event store
in its ``state_dir``, time series straight to the database with their spool). Each confirmed change
goes into the spool (:mod:`.spool`; those of one event-loop turn together, :class:`Publisher`)
before anything else and from there to the broker
(:class:`~.link.PollerLink`); the core acknowledges what it has stored. While the broker or the
core is unreachable the changes wait in order with their real times.

Credentials: the broker list comes from the shared config; a poller authenticates as itself
(``--mqtt-user``, default its id, and ``--mqtt-password-file``), so the broker's ACL can confine it
to its own topics. Of the shared config's secrets it reads only what polling needs (SNMP
credentials, time series): the core's (delivery, API, its broker password) stay on the core.
SIGTERM/SIGINT stop it cleanly (polls in flight finish, the writer flushes). systemd unit:
``systemd/monitor-poller.service``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from pathlib import Path

from monitor import logs
from monitor.clock import Clock, SystemClock
from monitor.errors import ConfigError, MonitorError
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory
from monitor.inventory.secrets import resolve_secret
from monitor.logs import event
from monitor.polling.stage import PollingStage
from monitor.remote.link import Broker, PollerLink, cancel_until_done
from monitor.remote.spool import PollerSpool
from monitor.sdnotify import Notifier
from monitor.state import StateChange
from monitor.tsdb.writer import make_writer

log = logging.getLogger(__name__)


def zone_inventory(inv: Inventory, zone: str, poller: str) -> Inventory:
    """``inv`` reduced to the targets of ``zone``; ConfigError when the zone or poller is not configured."""
    p = inv.pollers
    if p is None:
        raise ConfigError([f"{inv.source}: no pollers: section (monitor poll needs zones)"])
    if zone not in p.zones:
        raise ConfigError([f"{inv.source}: pollers.zones: no zone {zone!r} (zones: {', '.join(sorted(p.zones))})"])
    if poller not in p.zones[zone].pollers:
        raise ConfigError([f"{inv.source}: pollers.zones: poller {poller!r} does not cover zone {zone!r}"])
    targets = {tid: t for tid, t in inv.targets.items() if p.zone_of.get(tid) == zone}
    return dataclasses.replace(inv, targets=targets)


async def run_poller(inv: Inventory, zone: str, poller: str, brokers: list[Broker], *, stop: asyncio.Event,
                     clock: Clock | None = None, heartbeat: float | None = None, resend_after: float = 30.0) -> None:
    """Poll ``zone`` until ``stop`` is set."""
    clock = clock or SystemClock()
    local = zone_inventory(inv, zone, poller)
    assert inv.pollers is not None
    state_dir = Path(local.daemon.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    spool = PollerSpool(state_dir / f"poller-{poller}.db", poller, zone)
    link = PollerLink(spool, brokers, prefix=inv.pollers.prefix, resend_after=resend_after,
                      heartbeat=inv.pollers.heartbeat if heartbeat is None else heartbeat,
                      clock=clock, polling_since=clock.now())  # it polls from now until it stops

    publisher = Publisher(spool, link)
    notifier = Notifier()  # systemd (Type=notify): ready once polling, watchdog while the loop turns
    stage = PollingStage(clock)
    stage.sinks.append(publisher)
    stage.open(local)
    try:
        await stage.start_probes(local)
        writer = stage.writer = make_writer(local.timeseries, state_dir)
        async with asyncio.TaskGroup() as tg:
            scheduler_task = tg.create_task(stage.schedule(local, tg.create_task).run())
            writer_task = tg.create_task(writer.run()) if writer else None
            heartbeat_task = tg.create_task(stage.heartbeat())
            link_task = tg.create_task(link.run())
            publisher_task = tg.create_task(publisher.run())
            event(log, logging.INFO, "poller started", poller=poller, zone=zone, targets=len(local.targets),
                  backlog=spool.backlog())
            notifier.ready(f"polling {len(local.targets)} targets of zone {zone}")
            watchdog_task = tg.create_task(_watchdog(notifier)) if notifier.watchdog_interval else None
            await stop.wait()
            notifier.stopping()
            if watchdog_task is not None:
                watchdog_task.cancel()
            stage.stop()
            await scheduler_task
            await stage.drain()
            heartbeat_task.cancel()
            if writer is not None and writer_task is not None:
                await writer.close()
                await writer_task
            publisher.flush()
            publisher_task.cancel()
            await _flush(link, spool, timeout=5.0)
            await cancel_until_done(link_task)
    finally:
        await stage.close()
        with contextlib.suppress(MonitorError):  # an error ended the run: what was confirmed still waits
            publisher.flush()
        spool.close()
    event(log, logging.INFO, "poller stopped", poller=poller)


class Publisher:
    """The polling stage's sink on a poller: confirmed changes into the spool, then the link told.

    The changes confirmed in one turn of the event loop go into the spool together: one transaction
    (one fsync) and messages of up to MAX_CHANGES changes. A batch ICMP round records its whole batch
    in one turn, so a core failure seen by a poller of 25,000 endpoints is a handful of messages, not
    25,000 (each with its own fsync, ~3 ms here, and its own round trip to the core: bench/pollers).
    What waits for the turn's end has been confirmed and written to the poller's own event store;
    :meth:`run` writes it to the spool at the next turn and :meth:`flush` at stop. A spool that
    refuses the write raises in :meth:`run`, which ends the poller as a refused write did before.
    """

    def __init__(self, spool: PollerSpool, link: PollerLink) -> None:
        self.spool, self.link = spool, link
        self.pending: list[StateChange] = []
        self._wake = asyncio.Event()

    def __call__(self, change: StateChange) -> None:
        self.pending.append(change)
        self._wake.set()

    def flush(self) -> None:
        """Spool what is pending (in order), then wake the link."""
        if self.pending:
            self.spool.add(self.pending)  # StorageError: kept pending, the poller stops
            self.pending = []
            self.link.added()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self.flush()


async def _watchdog(notifier: Notifier) -> None:
    """Ping systemd's watchdog while the event loop is responsive; a stuck poller gets restarted."""
    while True:
        notifier.watchdog()
        await asyncio.sleep(notifier.watchdog_interval)


async def _flush(link: PollerLink, spool: PollerSpool, timeout: float) -> None:
    """Give the link a moment to hand over what the last polls found (what stays waits in the spool)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while spool.backlog() and link.connected.is_set() and loop.time() < end:
        await asyncio.sleep(0.05)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("poll", help="the poller role: poll one zone and publish its changes to the core (MQTT)")
    p.add_argument("--config", type=Path, required=True, help="the shared inventory (YAML) with a pollers: section")
    p.add_argument("--zone", required=True, help="the zone this machine polls")
    p.add_argument("--poller", required=True, help="this poller's id (listed under the zone's pollers)")
    p.add_argument("--mqtt-user", help="broker user name (default: the poller's id)")
    p.add_argument("--mqtt-password-file", type=Path, help="file holding the broker password")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    inv = load_inventory(args.config, poller=True)  # the core's secrets need not be on this machine
    logs.setup(inv.daemon.log_format, inv.daemon.log_level)
    if inv.pollers is None:
        raise ConfigError([f"{args.config}: no pollers: section (monitor poll needs zones)"])
    password = None
    if args.mqtt_password_file:  # read like every secret file: bounded, UTF-8, one trailing newline off
        password = resolve_secret({"file": str(args.mqtt_password_file)}, Path.cwd(), os.environ).reveal()
    user = args.mqtt_user or args.poller
    brokers = [Broker(b.host, b.port, user, password, b.tls, b.ca_file) for b in inv.pollers.brokers]
    try:
        asyncio.run(_main(inv, args.zone, args.poller, brokers))
    except ExceptionGroup as group:  # from the TaskGroup: our own errors end the run, anything else is a bug
        ours, rest = group.split(MonitorError)
        if ours is None or rest is not None:
            raise
        for exc in ours.exceptions:
            logging.getLogger("monitor").error("fatal: %s", exc)
        return 1
    return 0


async def _main(inv: Inventory, zone: str, poller: str, brokers: list[Broker]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_poller(inv, zone, poller, brokers, stop=stop)
