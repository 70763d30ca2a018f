"""The whole pipeline at scale: a tower outage end to end, through the real daemon process.

    .venv/bin/python -m bench.e2e.run --cpes 10000 [--towers 4] [--runs 3] [--rt]      (root, repo root)

Generates an ISP on loopback (bench/e2e/network.py: 1 core, ``--towers`` towers, one AP per
``--cpes-per-ap`` CPEs, ``--cpes`` customers from a billing CSV, each with an e-mail address), starts
a real SMTP server (aiosmtpd writing a Maildir), optionally a real RT 5 (else the folder desk), and
``python -m monitor run`` as a subprocess, then:

1. warm-up: waits until every target is UP, then measures ``--steady`` seconds of steady state;
2. cut: one nftables transaction drops echo requests to tower-1 and every address below it, and
   times, from the moment that command returned: first DOWN confirmed, the tower DOWN, all of the
   subtree DOWN, the incident opened (engine timestamp), every customer attached, the ticket
   created, the technician alert and the first and last customer notice at the SMTP server;
3. restore: deletes those addresses from the set again and times all UP, the incident resolved,
   the ticket resolved and the first and last "service restored" notice;
4. checks: exactly one customer-affecting incident (an outage rooted at the tower), one ticket, one
   technician alert, exactly one "opened" and one "restored" notice per affected customer with
   distinct Message-IDs, no DOWN or DEGRADED outside the subtree, nothing failed or left pending in
   the outbox, no skipped polls.

Also issue 12's ratio, in the same run: the first customer notice against the tower's confirmation +
the settle period + 5 s (``first notice / goal``; at most 1 is the goal).

Also the CPU % (of one core) and RSS of the daemon (and of the SMTP server) per phase. Exit status
1 if a check failed or a milestone did not come before ``--timeout``. Everything it started is
stopped by PID, and the firewall table deleted, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from bench.e2e.checks import Outcome, check_run, lag_max, scrape
from bench.e2e.network import SENDER, Network, Settings, generate
from bench.e2e.observe import Mailbox, Sampler, Store
from monitor.correlate.settings import CorrelationOverrides, CorrelationSettings, derive
from tests.firewall import IcmpBlock, icmp_block
from tests.lab.processes import DaemonProcess, started_here
from tests.servers.common import free_port
from tests.servers.rt import RequestTracker
from tests.servers.smtp import SmtpServer

T = TypeVar("T")
POLL = 0.2


class Failed(Exception):
    """A milestone that did not come in time, or the daemon died."""


class Timeline:
    """Prints one line per milestone, in seconds after a reference time (the cut, the restore)."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.zero = 0.0

    def mark(self, name: str, at: float, detail: str = "") -> None:
        self.marks[name] = at - self.zero
        print(f"  {name:<34} {at - self.zero:8.2f} s  {detail}", flush=True)


def poll_until(get: Callable[[], T | None], timeout: float, what: str, daemon: DaemonProcess) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if value is not None:
            return value
        if not daemon.alive():
            raise Failed(f"the daemon exited while waiting for {what}:\n{daemon.log_tail(30)}")
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL)


class Watch:
    """The milestones of one phase, taken as they appear (each printed once)."""

    def __init__(self, store: Store, mail: Mailbox, net: Network, tl: Timeline) -> None:
        self.store, self.mail, self.net, self.tl = store, mail, net, tl
        self.incident: str = ""

    def outage(self, since: float) -> bool:
        """One pass over the cut's milestones; True once all of them were seen."""
        tl, net = self.tl, self.net
        downs = [c for c in self.store.changes(since, "down") if c[1] in net.cut_targets]
        if downs and "first DOWN confirmed" not in tl.marks:
            tl.mark("first DOWN confirmed", downs[0][0], downs[0][1])
        tower = [c for c in downs if c[1] == net.cut_tower]
        if tower and "tower DOWN confirmed" not in tl.marks:
            tl.mark("tower DOWN confirmed", tower[0][0], net.cut_tower)
        if len({c[1] for c in downs}) == len(net.cut_targets) and "all of the subtree DOWN" not in tl.marks:
            tl.mark("all of the subtree DOWN", max(c[0] for c in downs), f"{len(net.cut_targets)} targets")
        if not self.incident:
            rows = [r for r in self.store.incidents(since) if r["root"] == net.cut_tower]
            if not rows:
                return False
            self.incident = str(rows[0]["id"])
            tl.mark("incident opened", float(rows[0]["opened_at"]), f"{self.incident} {rows[0]['kind']}")
        if "every customer attached" not in tl.marks:
            full = [e for e in self.store.events(self.incident) if e[2] == len(net.cut_customers)]
            if full:
                tl.mark("every customer attached", full[0][0], f"{full[0][1]} event, {full[0][2]} customers")
        self._ticket("ticket_open", "ticket created")
        self._mails("tech_alert", "technician alert at SMTP", "technician alert at SMTP", 1)
        self._mails("customer_opened", "first customer notice", "last customer notice", len(net.cut_customers))
        return all(k in tl.marks for k in ("all of the subtree DOWN", "every customer attached", "ticket created",
                                           "technician alert at SMTP", "last customer notice"))

    def restore(self, since: float) -> bool:
        tl, net = self.tl, self.net
        ups = {c[1]: c[0] for c in self.store.changes(since, "up") if c[1] in net.cut_targets}
        if len(ups) == len(net.cut_targets) and "all of the subtree UP" not in tl.marks:
            tl.mark("all of the subtree UP", max(ups.values()), f"{len(ups)} targets")
        resolved = [e for e in self.store.events(self.incident) if e[1] == "resolved"]
        if resolved and "incident resolved" not in tl.marks:
            tl.mark("incident resolved", resolved[0][0], f"{resolved[0][2]} customers restored")
        self._ticket("ticket_resolve", "ticket resolved")
        self._mails("customer_restored", "first restored notice", "last restored notice", len(net.cut_customers))
        return all(k in tl.marks for k in ("incident resolved", "ticket resolved", "last restored notice"))

    def _ticket(self, action: str, name: str) -> None:
        if name in self.tl.marks:
            return
        rows = [r for r in self.store.outbox() if r["incident"] == self.incident and r["action"] == action
                and r["status"] == "delivered"]
        if rows:
            self.tl.mark(name, float(rows[0]["done_at"]), f"{self.incident}, attempts {rows[0]['attempts']}")

    def _mails(self, action: str, first: str, last: str, expected: int) -> None:
        if last in self.tl.marks:
            return
        self.mail.refresh()
        got = self.mail.of(self.incident, action)
        if got and first not in self.tl.marks and first != last:
            self.tl.mark(first, got[0].arrived, got[0].to)
        if len(got) >= expected:
            self.tl.mark(last, got[-1].arrived, f"{len(got)} mails")


def notice_goal(marks: dict[str, float], settings: CorrelationSettings) -> str:
    """Issue 12's anchor, in the same run: the first customer notice should come within the tower's
    confirmation + the settle period + 5 s (the customers below are cut off: nothing to wait for)."""
    anchor = marks["tower DOWN confirmed"] + settings.settle + 5.0
    first = marks["first customer notice"]
    return (f"{first:.2f} s / ({marks['tower DOWN confirmed']:.2f} + settle {settings.settle:g} + 5 = "
            f"{anchor:.2f} s) = {first / anchor:.2f}")


def one_run(args: argparse.Namespace, number: int) -> Outcome:
    print(f"run {number}: {args.cpes} CPEs, {args.towers} towers, CPE interval {args.cpe_interval} s, "
          f"nodes {args.node_interval} s, SMTP pool {args.pool}, desk {'RT 5' if args.rt else 'folder'}", flush=True)
    with ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
        if not args.keep:
            stack.callback(shutil.rmtree, root, ignore_errors=True)
        print(f"  files in {root}" + ("" if args.keep else " (removed afterwards; --keep keeps them)"), flush=True)
        (root / "smtp").mkdir()
        smtp = SmtpServer(root / "smtp")
        stack.enter_context(started_here(smtp))
        rt = None
        if args.rt:
            (root / "rt").mkdir()
            rt = RequestTracker(root / "rt")
            stack.enter_context(started_here(rt, 120))
        metrics_port = free_port()
        settings = Settings(cpes=args.cpes, towers=args.towers, cpes_per_ap=args.cpes_per_ap,
                            cpe_interval=args.cpe_interval, node_interval=args.node_interval, pool=args.pool,
                            smtp_port=smtp.port, rt_url=rt.url if rt else "", metrics_port=metrics_port,
                            correlation=dict(s.split("=", 1) for s in args.set))
        net = generate(root, settings)
        store = Store(net.db)
        daemon = DaemonProcess(net.config, root / "daemon.log")
        started = time.time()
        daemon.start()
        stack.callback(daemon.stop)
        assert smtp.process is not None
        pids = {"daemon": daemon.pid, "smtpd": smtp.process.pid}
        sampler = Sampler(pids)
        sampler.start()
        stack.callback(sampler.stop)
        firewall: IcmpBlock = stack.enter_context(icmp_block())
        tl = Timeline()
        tl.zero = started
        print(f"  {net.targets} targets, {len(net.cut_targets)} below {net.cut_tower} "
              f"({len(net.cut_customers)} customers)", flush=True)
        poll_until(lambda: True if store.states()["up"] == net.targets else None, args.timeout,
                   "every target UP", daemon)
        warm = time.time()
        tl.mark("every target UP", warm)
        time.sleep(args.steady)  # a measurement window, not a wait for a condition
        steady_end = time.time()
        before_cut = scrape(metrics_port)
        mail = Mailbox(smtp.maildir, store, SENDER)
        watch = Watch(store, mail, net, tl)

        print(f"cut {net.cut_tower}: {len(net.cut_addresses)} addresses stop answering", flush=True)
        t = time.time()
        firewall.block(*net.cut_addresses)
        cut = tl.zero = time.time()
        print(f"  (nft transaction took {cut - t:.3f} s)")
        poll_until(lambda: True if watch.outage(cut) else None, args.timeout, "the outage's milestones", daemon)
        outage_end = time.time()
        goal = notice_goal(tl.marks, derive(args.cpe_interval, CorrelationOverrides.parse(settings.correlation)))

        print("restore: the addresses answer again", flush=True)
        t = time.time()
        firewall.unblock(*net.cut_addresses)
        restore = tl.zero = time.time()
        poll_until(lambda: True if watch.restore(restore) else None, args.timeout + 60,
                   "the restoration's milestones", daemon)
        restore_end = time.time()
        poll_until(lambda: True if not [r for r in store.outbox() if r["status"] == "pending"] else None, 60,
                   "the outbox to drain", daemon)
        after = scrape(metrics_port)
        outcome = check_run(store, mail, net, watch.incident, cut, warm, rt)
        outcome.marks = tl.marks
        outcome.facts["first notice / goal (issue 12)"] = goal
        outcome.scheduler = {"skipped polls (whole run)": after.get("skipped", 0.0),
                             "skipped polls (cut → end)": after.get("skipped", 0.0) - before_cut.get("skipped", 0.0),
                             "scheduler lag p99 (s, whole run)": after.get("lag_p99", float("nan")),
                             "scheduler lag max (s, cut → end) <=": lag_max(before_cut, after)}
        sampler.stop()
        outcome.cpu = {
            "warm-up": sampler.cpu_pct("daemon", started, warm),
            "steady": sampler.cpu_pct("daemon", warm, steady_end),
            "outage": sampler.cpu_pct("daemon", cut, outage_end),
            "restore": sampler.cpu_pct("daemon", restore, restore_end),
            "whole run": sampler.cpu_pct("daemon", started, restore_end),
            "outage, peak 1 s": sampler.cpu_peak("daemon", cut, outage_end),
            "smtpd, whole run": sampler.cpu_pct("smtpd", started, restore_end),
        }
        outcome.rss = {"daemon steady": sampler.rss_max("daemon", warm, steady_end),
                       "daemon max": sampler.rss_max("daemon")}
        t = time.time()
        code = daemon.stop()
        outcome.stop = (time.time() - t, code)
    outcome.report()
    return outcome


def summary(outcomes: list[Outcome]) -> None:
    if len(outcomes) < 2:
        return
    print(f"summary over {len(outcomes)} runs (min-max):")
    for name in outcomes[0].marks:
        values = [o.marks[name] for o in outcomes if name in o.marks]
        print(f"  {name:<34} {min(values):8.2f} - {max(values):.2f} s")
    ratios = [float(str(o.facts["first notice / goal (issue 12)"]).rsplit("= ", 1)[1]) for o in outcomes]
    print(f"  first notice / goal (issue 12)     {min(ratios):8.2f} - {max(ratios):.2f}")
    for name in outcomes[0].cpu:
        values = [o.cpu[name] for o in outcomes]
        print(f"  CPU {name:<30} {min(values):6.1f} - {max(values):.1f} %")
    print(f"  daemon RSS max                     {min(o.rss['daemon max'] for o in outcomes):6.0f} - "
          f"{max(o.rss['daemon max'] for o in outcomes):.0f} MB")
    print(f"  checks failed: {sum(len(o.problems) for o in outcomes)}")


def _terminate(signum: int, frame: FrameType | None) -> Any:
    raise SystemExit(128 + signum)  # unwind: firewall table deleted, processes stopped by PID


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpes", type=int, default=10_000)
    p.add_argument("--towers", type=int, default=4, help="tower-1 is cut: it carries 1/towers of the CPEs")
    p.add_argument("--cpes-per-ap", type=int, default=50)
    p.add_argument("--cpe-interval", type=float, default=10.0, help="ICMP interval of CPEs (also the "
                   "inventory's polling.interval, from which correlation's defaults derive)")
    p.add_argument("--node-interval", type=float, default=2.0, help="ICMP interval of core, towers and APs")
    p.add_argument("--pool", type=int, default=8, help="SMTP connections")
    p.add_argument("--rt", action="store_true", help="a real RT 5 as the desk (else the folder desk)")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--steady", type=float, default=10.0, help="seconds of steady state measured before the cut")
    p.add_argument("--timeout", type=float, default=180.0, help="per phase")
    p.add_argument("--keep", action="store_true", help="keep the run's folder (config, store, maildir, logs)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a correlation setting")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (raw ICMP sockets, nftables)")
    signal.signal(signal.SIGTERM, _terminate)
    outcomes = []
    failed = False
    for n in range(1, args.runs + 1):
        try:
            outcomes.append(one_run(args, n))
        except Failed as exc:
            print(f"run {n} FAILED: {exc}", flush=True)
            failed = True
    summary(outcomes)
    if failed or any(o.problems for o in outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()
