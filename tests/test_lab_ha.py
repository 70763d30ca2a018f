"""The HA lab (issue 13): two ``monitor run`` daemons on one PostgreSQL, every machine in a namespace.

``db`` (PostgreSQL 15), ``svc`` (an SMTP server, request-tracker) and the daemons' hosts ``noc-a``
and ``noc-b`` hang off the emulated ISP's core (tests/lab/ha.py); tower-1 carries 200 customers
behind four APs. Each scenario starts on a fresh database: daemon a first (active), then b
(standby), every target UP. tower-1's uplink is cut; while the 200 "Falla de servicio" notices are
going out the fault comes: (a) a SIGKILL of the active daemon, (b) its path to the database dropped
by nftables in its namespace (it keeps running and polling), (c) PostgreSQL restarted, (d) PostgreSQL
stopped until the active daemon has stood down, then started again, (e) the active daemon frozen
(SIGSTOP) until the standby took over, then thawed. Then the
tower comes back. Asserted on what the world received: every customer exactly one opened and one
restored notice (logical messages, one per Message-ID), the technician one alert and one
"resolved", one RT ticket (resolved), one incident, and in the event log exactly one DOWN and one
UP for each of the 205 targets behind the tower: nothing lost, nothing twice. Docs: docs/lab.md.
Takeover times are printed at the end (``-s``) and recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.lab.ha import (
    METRICS_PORT,
    HaDaemon,
    HaLab,
    fresh_database,
    notices,
    postgres_in,
    rows,
    rt_in,
    smtp_in,
    technician_mails,
    wait_daemon,
    write_config,
)
from tests.lab.processes import ROOT
from tests.lab.topology import folder_name
from tests.netns import nft_table
from tests.servers.common import require_binary, wait_for
from tests.servers.postgres import PostgreSQL
from tests.servers.rt import RequestTracker
from tests.servers.smtp import SmtpServer

pytestmark = [pytest.mark.root, pytest.mark.servers]

TAKEOVER = 15.0  # the promise: the standby is active within 15 s
FAN_OUT_BEGUN = 10  # mails at the SMTP server when the fault comes (of 201: 200 customers, the technician)
BEHIND_TOWER = 205  # tower-1, four APs, 200 CPEs
UNDELIVERED = "SELECT action, recipient, channel, status, attempts, error FROM outbox WHERE status <> 'delivered'"


@dataclass
class World:
    lab: HaLab
    pg: PostgreSQL
    rt: RequestTracker
    folder: Path
    names: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    timings: list[dict[str, object]] = field(default_factory=list)


@pytest.fixture(scope="module")
def ha_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if os.geteuid() != 0:
        pytest.skip("the HA lab needs root (network namespaces, raw ICMP, nftables, postgres as its own user)")
    for tool in ("ip", "nft", "rt-setup-database-5"):
        require_binary(tool)
    folder = tmp_path_factory.mktemp(folder_name())
    with ExitStack() as stack:
        lab = HaLab()
        stack.enter_context(lab)
        pg = stack.enter_context(postgres_in(lab))
        rt = stack.enter_context(rt_in(lab, folder))
        world = World(lab, pg, rt, folder)
        yield world
        if world.timings:
            print("\nHA lab timings:", *world.timings, sep="\n")


@dataclass
class Scenario:
    world: World
    url: str
    smtp: SmtpServer
    a: HaDaemon
    b: HaDaemon
    first_ticket: int  # RT tickets of this scenario have higher ids
    timing: dict[str, object]

    @property
    def customers(self) -> set[str]:
        return {f"{c.lower()}@clientes.example" for c in self.world.lab.customers()}

    def daemons(self) -> tuple[HaDaemon, HaDaemon]:
        return self.a, self.b


def all_up(url: str) -> bool:
    found = dict(rows(url, "SELECT target, state FROM target_state"))
    return len(found) == BEHIND_TOWER + 1 and set(found.values()) == {"up"}


@contextmanager
def scenario(world: World, name: str) -> Iterator[Scenario]:
    """A fresh database and SMTP server; a active, b standby, every target UP. Both stopped at the end."""
    number = next(world.names)
    lab, folder = world.lab, world.folder / f"{name}-{number}"  # (numbered: a scenario may run twice)
    folder.mkdir()
    url = fresh_database(world.pg, f"ha_{os.getpid()}_{number}")
    first_ticket = max((int(t["id"]) for t in world.rt.tickets()), default=0)
    # Each scenario's database numbers incidents from INC-000001 again, and the desk finds an incident's
    # ticket by that tag in its subject: the last scenario's tickets are deleted (searches skip them)
    for t in world.rt.tickets():
        world.rt.set_status(str(t["id"]), "deleted")
    assert world.rt.tickets() == []
    with smtp_in(lab, folder / "smtp") as smtp:
        daemons = []
        for n in ("a", "b"):
            host = lab.host(f"noc-{n}")
            cfg = write_config(lab, folder / n, f"{host.address}:{METRICS_PORT}", url, smtp, world.rt)
            daemons.append(HaDaemon(cfg, folder / n / "daemon.log", host))
        a, b = daemons
        try:
            a.start()
            wait_daemon("a active", a.active, 60, a)
            b.start()
            wait_daemon("b standby", b.standby, 60, a, b)
            wait_daemon("every target up", lambda: all_up(url), 120, a, b)
            s = Scenario(world, url, smtp, a, b, first_ticket, {"scenario": name})
            world.timings.append(s.timing)
            yield s
        finally:
            for d in daemons:
                d.stop()


def cut_tower(s: Scenario) -> float:
    """Cut tower-1's uplink and wait until the opened notices are going out; returns the cut's wall time."""
    cut = time.time()
    s.world.lab.cut("t1")
    wait_daemon(f"{FAN_OUT_BEGUN} mails of the fan-out", lambda: s.smtp.count() >= FAN_OUT_BEGUN, 90, *s.daemons())
    got = s.smtp.count()
    s.timing["mails_before_fault"] = got
    assert got < len(s.customers) + 1, f"the fan-out was over ({got} mails) before the fault: not mid fan-out"
    return cut


def status(d: HaDaemon) -> str:
    """``monitor status`` with the daemon's config, run from the test's namespace."""
    done = subprocess.run([sys.executable, "-m", "monitor", "status", "--config", str(d.config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    return done.stdout + done.stderr


def finish(s: Scenario, cut: float) -> None:
    """Every opened notice, the tower back, every restored notice; then everything counted exactly."""
    wanted = s.customers
    wait_daemon("one opened notice per customer", lambda: set(notices(s.smtp, "opened")) >= wanted, 150,
                *s.daemons())
    s.world.lab.restore("t1")
    wait_daemon("every incident resolved", lambda: {st for (st,) in rows(s.url, "SELECT status FROM incidents")}
                <= {"resolved", "merged"}, 90, *s.daemons())
    incidents = rows(s.url, "SELECT id, kind, root, status FROM incidents ORDER BY seq")
    assert [r[1:] for r in incidents] == [("outage", "tower-1", "resolved")], incidents
    wait_daemon("one restored notice per customer", lambda: set(notices(s.smtp, "restored")) >= wanted, 150,
                *s.daemons())
    wait_daemon("the outbox settled", lambda: not rows(
        s.url, "SELECT id FROM outbox WHERE status IN ('pending', 'sending')"), 60, *s.daemons())

    def ticket_resolved() -> bool:
        return [t["Status"] for t in tickets(s)] == ["resolved"]

    try:
        wait_for(ticket_resolved, 60, "the ticket resolved")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {tickets(s)}\noutbox: {rows(s.url, UNDELIVERED)}\n"
                             f"{s.a.log_tail()}\n{s.b.log_tail()}") from exc
    for event in ("opened", "restored"):
        got = notices(s.smtp, event)
        assert set(got) == wanted and set(got.values()) == {1}, (event, {k: v for k, v in got.items() if v != 1})
    tech = technician_mails(s.smtp)
    assert sum("ALERTA" in m for m in tech) == 1 and sum("RESUELTO" in m for m in tech) == 1, tech
    lifecycle = [e for (e,) in rows(s.url, "SELECT event FROM incident_events ORDER BY id")]
    assert lifecycle.count("opened") == 1 and lifecycle.count("resolved") == 1, lifecycle
    assert len(tickets(s)) == 1
    # the event log: each target behind the tower went DOWN once and came UP once, the core never changed
    changes = Counter((t, new) for t, new in rows(s.url, "SELECT target, new FROM state_changes WHERE ts >= %s",
                                                  (cut - 1,)))
    # a poll straddling the cut or the return (some pings answered), or a reply slowed past the rtt
    # limit on a loaded machine, may read DEGRADED on the way: allowed, DOWN and UP exactly once each
    # (seen under load 13: H3 and H4 failed on a DEGRADED with every DOWN and UP counted once)
    targets = {t for t, _ in changes}
    assert len(targets) == BEHIND_TOWER and "core" not in targets, changes
    assert all(changes[t, "down"] == 1 and changes[t, "up"] == 1 for t in targets), changes
    assert {new for _, new in changes} <= {"down", "up", "degraded"}, changes
    s.timing.update(degraded=sorted(t for t, new in changes if new == "degraded"))
    outbox = Counter(st for (st,) in rows(s.url, "SELECT status FROM outbox"))
    assert set(outbox) == {"delivered"}, outbox
    s.timing.update(mails=s.smtp.count(), logical_mails=len(s.smtp.logical()), outbox=sum(outbox.values()))


def tickets(s: Scenario) -> list[dict[str, Any]]:
    return s.world.rt.tickets(f"id > {s.first_ticket}")


def test_kill_9_of_the_active_daemon_mid_fan_out(ha_world: World) -> None:
    with scenario(ha_world, "kill") as s:
        cut = cut_tower(s)
        s.a.kill()
        killed = time.monotonic()
        wait_daemon("b active", s.b.active, 60, s.b)
        active_s = time.monotonic() - killed
        wait_daemon("b polling", lambda: (s.b.metric("monitor_polls_total") or 0) > 0, 60, s.b)
        s.timing.update(active_s=round(active_s, 1), polling_s=round(time.monotonic() - killed, 1))
        out = status(s.b)
        assert f"(pid {s.b.pid})" in out and "epoch: 2" in out, out
        finish(s, cut)
        assert active_s <= TAKEOVER, s.timing


def test_active_daemon_cut_from_the_database_stands_down(ha_world: World) -> None:
    with scenario(ha_world, "partition") as s:
        cut = cut_tower(s)
        db = s.world.lab.host("db").address
        body = (f"chain out {{ type filter hook output priority 0; policy accept; ip daddr {db} drop; }}\n"
                f"chain in {{ type filter hook input priority 0; policy accept; ip saddr {db} drop; }}")
        with nft_table(body, family="ip", namespace=s.a.host.namespace):
            parted = time.monotonic()
            wait_daemon("a stood down", lambda: s.a.exit_status() is not None, 60, s.a)
            stood_down_s = time.monotonic() - parted
            wait_daemon("b active", s.b.active, 60, s.a, s.b)
            active_s = time.monotonic() - parted
        s.timing.update(stood_down_s=round(stood_down_s, 1), active_s=round(active_s, 1))
        assert s.a.exit_status() == 75, s.a.log_tail()
        assert 'msg="standing down: stop polling and sending"' in s.a.text()
        # what systemd's Restart=always does next: a starts again, and waits as the standby now
        s.a.start()
        wait_daemon("a standby again", s.a.standby, 60, s.a)
        assert s.b.active()
        finish(s, cut)
        assert active_s <= TAKEOVER, s.timing
        assert "standby: waiting for the lease" in s.a.text().split('msg="standing down')[1]


def test_postgresql_restarted_mid_incident_loses_nothing(ha_world: World) -> None:
    """A restart of well under the lease's margin: the active daemon keeps its lease, each of its stores
    holds what it could not write (one log line per episode) and writes it when the database is back."""
    with scenario(ha_world, "restart") as s:
        cut = cut_tower(s)
        began = time.monotonic()
        s.world.pg.stop_fast()
        stopped = time.monotonic()
        s.world.pg.start(timeout=90)
        s.timing.update(pg_stop_s=round(stopped - began, 1), pg_down_s=round(time.monotonic() - began, 1))
        wait_daemon("a daemon active", lambda: s.a.active() or s.b.active(), 60, s.a, s.b)
        finish(s, cut)
        s.timing.update(active="a" if s.a.active() else "b", a_exit=s.a.exit_status())
        if s.a.exit_status() is not None:  # the restart outlasted a's lease (a very slow start): b took over
            assert s.a.exit_status() == 75 and s.b.active(), s.a.log_tail()
        assert set(re.findall(r"held state changes recorded changes=\d+ dropped=(\d+)", s.a.text())) <= {"0"}


def test_postgresql_down_past_the_lease_the_active_stands_down_and_nothing_is_lost(ha_world: World) -> None:
    """The database away longer than the lease allows: the active daemon stands down (exit 75, before its
    lease can expire), and once the database is back the standby takes over and finishes the incident."""
    with scenario(ha_world, "outage") as s:
        cut = cut_tower(s)
        began = time.monotonic()
        s.world.pg.stop_fast()
        try:
            wait_daemon("a stood down", lambda: s.a.exit_status() is not None, 60, s.a)
        finally:
            s.world.pg.start(timeout=90)
        back = time.monotonic()
        assert s.a.exit_status() == 75, s.a.log_tail()
        assert 'msg="standing down: stop polling and sending"' in s.a.text()
        wait_daemon("b active", s.b.active, 60, s.a, s.b)
        s.timing.update(pg_down_s=round(back - began, 1), b_active_after_pg_back_s=round(time.monotonic() - back, 1))
        s.a.start()  # systemd's Restart=always: a waits as the standby now
        wait_daemon("a standby again", s.a.standby, 60, s.a)
        finish(s, cut)
        assert s.b.active() and s.a.standby()


def test_active_daemon_frozen_past_its_lease_stands_down_and_nothing_is_lost(ha_world: World) -> None:
    """The active daemon frozen (SIGSTOP: a paused VM, a swap storm) mid fan-out until the standby has taken
    over, then thawed: it wakes with notices in hand and a lease that is no longer its own; its deadline
    has passed, it stands down (exit 75), the store refuses its writes and the lease's gate its calls
    outside. Every customer still gets one opened and one restored notice, and the desk ends with one
    ticket: a create request of the frozen daemon's that was already on its way when the standby took
    over made a second one in 4 of 17 runs (docs/lab.md, H5); such a late ticket is merged into the
    oldest before the resolve. The timings say on which channels the gate held a's calls back
    (``gate_held``) and how many tickets were merged (``merged``)."""
    with scenario(ha_world, "freeze") as s:
        cut = cut_tower(s)
        os.kill(s.a.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            wait_daemon("b active", s.b.active, 60, s.b)
            active_s = time.monotonic() - frozen
        finally:
            os.kill(s.a.pid, signal.SIGCONT)
        s.timing["active_s"] = round(active_s, 1)
        wait_daemon("a standing down", lambda: 'msg="standing down: stop polling and sending"' in s.a.text(), 30, s.a)
        wait_daemon("a's exit", lambda: s.a.exit_status() is not None, 30, s.a)
        assert s.a.exit_status() == 75, s.a.log_tail()
        finish(s, cut)
        assert active_s <= TAKEOVER, s.timing
        s.timing.update(gate_held=sorted(set(re.findall(r"channel=(\w+) reason=lease_lapsed", s.a.text()))),
                        merged=sum(d.text().count('msg="duplicate ticket merged"') for d in s.daemons()))
