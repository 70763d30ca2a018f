"""Active/standby failover under fire (issue 13): kill -9 the active daemon at a random moment of a
fan-out; how long until the standby is active and polls, and what was lost or sent twice.

    python -m bench.failover.run [--trials 20] [--customers 200] [--seed 1]

Each trial: a fresh database on one PostgreSQL 15 (started here, tests/servers/postgres.py), a real
SMTP server (aiosmtpd writing a Maildir), two ``monitor run`` processes with the same config (an AP
and one CPE per customer on this process's own loopback addresses, email notices to every customer
and the on-call technician). Daemon a starts first (active), b waits as standby. The AP and the
CPEs stop answering (nftables drops their echo requests: root); once a random number of notices in
[1, customers] is recorded as delivered (the outbox polled every 5 ms) a is killed with SIGKILL. The
trial measures the time from the kill until b reports itself active on /metrics and until it has
polled, waits for every "opened" notice, lets the targets answer again, waits for every "restored"
notice, and counts per recipient and kind: lost (expected, not received), repeated (received more
than once: same Message-ID, which a mail client shows once, or a different one). "Update" notices
(the incident confirmed or grown, as the correlation decides under load) are counted apart; the same
update text twice to one recipient under two Message-IDs counts as repeated.
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import psycopg

from tests.firewall import icmp_block, lab_address
from tests.servers.common import free_port, wait_for
from tests.servers.postgres import PostgreSQL as Server
from tests.servers.smtp import SmtpServer
from tests.store_engines import ThrowawayDatabase, config_keys, fresh_database
from tests.test_ha_daemons import DELIVERY, DaemonProcess, kind


def config(folder: Path, customers: int, smtp: SmtpServer, db: ThrowawayDatabase, metrics_port: int) -> Path:
    lines = [
        "municipalities: [{id: m1, name: Municipio Uno}]",
        "sites: [{id: s1, municipality: m1, name: Torre Uno}]",
        "service_classes:\n  residencial: {response_hours: 24, availability_target: 98.0}",
        "polling: {interval: 1.0, icmp_count: 1, icmp_timeout: 0.3, down_after: 2, up_after: 2}",
        "correlation: {settle: 0.5, hold_down: 0.6, window: 1.0}",
        f'daemon: {{state_dir: var, metrics_listen: "127.0.0.1:{metrics_port}"{config_keys(db, folder)}}}',
        "nodes:",
        "  - {id: core, kind: router, address: 127.0.0.1, site: s1}",
        f"  - {{id: ap-1, kind: ap, address: {lab_address(0)}, parent: core}}",
        "customers:",
    ]
    lines += [f"  - {{id: C{i}, name: Cliente {i}, service_class: residencial, contacts: {{email: c{i}@example.com}},"
              f" endpoints: [{{id: cpe-{i}, kind: cpe, address: {lab_address(i)}, parent: ap-1}}]}}"
              for i in range(1, customers + 1)]
    path = folder / "sites.yaml"
    path.write_text("\n".join(lines) + "\n" + DELIVERY.format(port=smtp.port))
    return path


class Daemon(DaemonProcess):
    def __init__(self, folder: Path, customers: int, smtp: SmtpServer, db: ThrowawayDatabase) -> None:
        folder.mkdir()
        port = free_port()
        super().__init__(config(folder, customers, smtp, db, port), port, folder / "daemon.log")


def scalar(db: ThrowawayDatabase, sql: str) -> int:
    try:
        with psycopg.connect(db.url, password=db.password, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(sql).fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


def received(smtp: SmtpServer) -> tuple[Counter[tuple[str, str]], int]:
    """Per (recipient, kind) the distinct Message-IDs received (updates by their body too: the same
    update sent again under another Message-ID is a repeat), and the mails that repeated a Message-ID."""
    ids: dict[str, tuple[str, str]] = {}
    updates: set[tuple[str, str]] = set()
    total = 0
    for m in smtp.messages():
        total += 1
        k = kind(str(m["Subject"]))
        if k == "update":
            body = m.get_body(("plain",))
            text = body.get_content() if body is not None else ""
            if (str(m["To"]), text) in updates and str(m["Message-ID"]) not in ids:
                ids[str(m["Message-ID"])] = (str(m["To"]), "update repeated")
                continue
            updates.add((str(m["To"]), text))
        ids[str(m["Message-ID"])] = (str(m["To"]), k)
    return Counter(ids.values()), total - len(ids)


def trial(n: int, server: Server, root: Path, customers: int, rng: random.Random) -> dict[str, float]:
    folder = root / f"trial-{n}"
    folder.mkdir()
    (folder / "smtp").mkdir()
    smtp = SmtpServer(folder / "smtp")
    smtp.start(60)
    db = fresh_database(server)
    a = b = None
    try:
        a = Daemon(folder / "a", customers, smtp, db)
        wait_for(lambda: a is not None and a.metric("monitor_ha_active") == 1, timeout=120, what="a active")
        b = Daemon(folder / "b", customers, smtp, db)
        wait_for(lambda: b is not None and b.metric("monitor_ha_active") == 0, timeout=120, what="b standby")
        wait_for(lambda: scalar(db, "SELECT COUNT(*) FROM target_state WHERE state = 'up'") == customers + 2,
                 timeout=120, what="targets up")
        kill_at = rng.randint(1, customers)
        with icmp_block() as fw:
            fw.block(*(lab_address(i) for i in range(customers + 1)))
            deadline = time.monotonic() + 120
            while scalar(db, "SELECT COUNT(*) FROM outbox WHERE status = 'delivered'") < kill_at:
                if time.monotonic() > deadline:
                    raise TimeoutError("the fan-out did not reach the kill point")
                time.sleep(0.005)
            a.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            a.proc.wait(10)
            wait_for(lambda: b is not None and b.metric("monitor_ha_active") == 1, timeout=120, what="b active")
            active = time.monotonic() - killed
            wait_for(lambda: b is not None and (b.metric("monitor_polls_total") or 0) > 0, timeout=120,
                     what="b polling")
            polling = time.monotonic() - killed
            wait_for(lambda: sum(1 for (_, k) in received(smtp)[0] if k == "down") >= customers + 1, timeout=180,
                     what="every opened notice")
        wait_for(lambda: sum(1 for (_, k) in received(smtp)[0] if k == "back") >= customers + 1, timeout=180,
                 what="every restored notice")
        time.sleep(2.0)  # (a benchmark, not a test: late repeats would arrive now)
        got, same_id = received(smtp)
        expected = {(f"c{i}@example.com", k) for i in range(1, customers + 1) for k in ("down", "back")}
        expected |= {("ana@isp.example", "down"), ("ana@isp.example", "back")}
        lost = len(expected - set(got))
        repeated = sum(c - 1 for (_, k), c in got.items() if c > 1 and k != "update")
        repeated += sum(c for (_, k), c in got.items() if k == "update repeated")
        incidents = scalar(db, "SELECT COUNT(*) FROM incidents")
        updates = sum(c for (_, k), c in got.items() if k == "update")
        return {"kill_at": kill_at, "active": active, "polling": polling, "lost": lost, "repeated": repeated,
                "same_id": same_id, "incidents": incidents, "updates": updates}
    except BaseException:
        for name, d in (("a", a), ("b", b)):
            if d is not None:
                print(f"--- {name}'s log (last 40 lines) ---", *d.text().splitlines()[-40:], sep="\n", flush=True)
        raise
    finally:
        for d in (a, b):
            if d is not None:
                d.stop()
        smtp.stop()
        db.close_all()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--customers", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    server = Server()
    server.start(timeout=60)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
            for n in range(args.trials):
                r = trial(n, server, Path(tmp), args.customers, rng)
                results.append(r)
                print(f"trial {n + 1}: kill after {r['kill_at']:.0f} delivered, active {r['active']:.1f} s,"
                      f" polling {r['polling']:.1f} s, lost {r['lost']:.0f}, repeated {r['repeated']:.0f}"
                      f" (same Message-ID {r['same_id']:.0f}), incidents {r['incidents']:.0f},"
                      f" updates {r['updates']:.0f}", flush=True)
    finally:
        server.remove()
    for key in ("active", "polling"):
        values = [r[key] for r in results]
        print(f"{key}: min {min(values):.1f} s, median {statistics.median(values):.1f} s, max {max(values):.1f} s")
    print(f"lost {sum(r['lost'] for r in results):.0f}, repeated {sum(r['repeated'] for r in results):.0f}"
          f" (same Message-ID {sum(r['same_id'] for r in results):.0f}), trials with more than one incident"
          f" {sum(1 for r in results if r['incidents'] != 1)}")


if __name__ == "__main__":
    main()
