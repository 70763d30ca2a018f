"""`monitor report` on a month of a generated 5,000-target network.

    .venv/bin/python bench/report/run.py [--targets 5000] [--churn 1.0]

Generates, in a temp dir, a config (1 core, 10 towers, 200 APs, customers in customers.csv) and a
store holding October 2026: every endpoint goes down and back ``--churn`` times a day on average
(home CPEs switched off at night, outages), some nodes fail and degrade, ~1 incident per 3 targets
with their lifecycle events, acknowledgements and maintenance windows. Then it runs the real CLI
(`python -m monitor report --month 2026-10`) once per format and prints wall time, the phases from
the progress lines, and peak RSS. Goal: under a minute for the month.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from monitor.store import EventStore  # noqa: E402

OCT = datetime(2026, 10, 1, tzinfo=UTC).timestamp()
NOV = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
MUNIS = ["arauca", "arauquita", "saravena", "tame", "fortul"]


def write_config(folder: Path, targets: int) -> tuple[list[str], list[str], dict[str, str]]:
    """Returns node ids, endpoint ids and endpoint → customer."""
    towers = 10
    aps = 200
    nodes = ["  - {id: core, kind: router, address: 127.10.0.1, site: s0}"]
    sites = [f"  - {{id: s{i}, municipality: {MUNIS[i % 5]}, name: Torre {i}, lat: {6.5 + i / 20},"
             f" lon: {-71 - i / 20}}}" for i in range(towers)]
    for i in range(towers):
        nodes.append(f"  - {{id: sw-{i}, kind: switch, address: 127.10.1.{i + 1}, parent: core, site: s{i}}}")
    for a in range(aps):
        address = f"127.10.{2 + a // 250}.{a % 250 + 1}"
        nodes.append(f"  - {{id: ap-{a}, kind: ap, address: {address}, parent: sw-{a % towers}}}")
    node_ids = ["core", *(f"sw-{i}" for i in range(towers)), *(f"ap-{a}" for a in range(aps))]
    n_endpoints = targets - len(node_ids)
    lines = ["customer_id,name,service_class,email,phone,language,notify,endpoint_id,endpoint_kind,address,parent"]
    endpoints, owner = [], {}
    for e in range(n_endpoints):
        cls = "corporativo" if e % 10 == 0 else "residencial"
        eid, cid = f"cpe-{e:05d}", f"C-{e:05d}"
        lines.append(f"{cid},Cliente {e},{cls},,,es,yes,{eid},cpe,127.{20 + e // 62500}.{e // 250 % 250}.{e % 250 + 1},"
                     f"ap-{e % aps}")
        endpoints.append(eid)
        owner[eid] = cid
    (folder / "customers.csv").write_text("\n".join(lines) + "\n")
    (folder / "sites.yaml").write_text(
        "municipalities:\n" + "".join(f"  - {{id: {m}, name: {m.title()}}}\n" for m in MUNIS)
        + "sites:\n" + "\n".join(sites) + "\n"
        + "service_classes:\n  corporativo: {response_hours: 12, availability_target: 99.5}\n"
        + "  residencial: {response_hours: 24, availability_target: 98.0}\n"
        + "daemon: {state_dir: var}\nnodes:\n" + "\n".join(nodes) + "\ncustomers_file: customers.csv\n"
    )
    return node_ids, endpoints, owner


def write_store(db: Path, nodes: list[str], endpoints: list[str], owner: dict[str, str], churn: float,
                rng: random.Random) -> tuple[int, int]:
    EventStore(db).close()  # the real schema and migrations
    con = sqlite3.connect(db)
    changes: list[tuple[float, str, str, str, str]] = []
    for t in [*nodes, *endpoints]:
        changes.append((OCT - 86400, t, "unknown", "up", "first reply"))
        per_day = churn if t in owner else churn / 20
        ts = OCT
        while True:
            ts += rng.expovariate(per_day / 86400)
            if ts >= NOV:
                break
            state = "degraded" if rng.random() < 0.1 else "down"
            back = ts + rng.expovariate(1 / (3 * 3600 if state == "down" else 1800))
            changes += [(ts, t, "up", state, "bench"), (back, t, state, "up", "bench")]
            ts = back
    changes.sort()
    con.executemany("INSERT INTO state_changes (ts, target, old, new, reason) VALUES (?, ?, ?, ?, ?)", changes)
    incidents, events = [], []
    n = (len(nodes) + len(endpoints)) // 3
    for seq in range(1, n + 1):
        opened = rng.uniform(OCT - 86400, NOV)
        cleared = opened + rng.expovariate(1 / 5400)
        root = rng.choice(nodes) if seq % 5 == 0 else rng.choice(endpoints)
        eps = rng.sample(endpoints, 20) if root in nodes else [root]
        iid = f"INC-{seq:06d}"
        acked = opened + rng.expovariate(1 / 7200) if rng.random() < 0.7 else None
        open_ = cleared > NOV
        incidents.append((iid, seq, "outage" if root in nodes else "single", root, "open" if open_ else "resolved",
                          opened, cleared, None if open_ else cleared, None if open_ else cleared + 300, acked))
        custs = json.dumps(sorted(owner[e] for e in eps))
        events.append((opened, iid, "opened", json.dumps(eps), custs, json.dumps([root])))
        if not open_:
            events.append((cleared + 300, iid, "resolved", json.dumps(eps), custs, json.dumps([root])))
    con.executemany(
        "INSERT INTO incidents (id, seq, kind, basis, root, status, opened_at, updated_at, cleared_at, closed_at,"
        " last_update, acked_at) VALUES (?, ?, ?, 'outage', ?, ?, ?, ?, ?, ?, ?, ?)",
        [(i, s, k, r, st, o, o, c, cl, o, a) for i, s, k, r, st, o, _, c, cl, a in incidents],
    )
    con.executemany(
        "INSERT INTO incident_events (ts, incident, event, kind, root, affected_endpoints, affected_customers,"
        " affected_nodes) VALUES (?, ?, ?, 'outage', 'x', ?, ?, ?)", events,
    )
    for w in range(20):
        start = rng.uniform(OCT, NOV)
        con.execute("INSERT INTO maintenance (node, start, end, reason, author, customers, created_at)"
                    " VALUES (?, ?, ?, 'bench', 'bench', '[]', ?)", (f"ap-{w * 7}", start, start + 7200, start))
    con.commit()
    con.close()
    return len(changes), len(incidents)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=5000)
    ap.add_argument("--churn", type=float, default=1.0, help="down episodes per endpoint per day")
    args = ap.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        nodes, endpoints, owner = write_config(folder, args.targets)
        (folder / "var").mkdir()
        n_changes, n_incidents = write_store(folder / "var" / "monitor.db", nodes, endpoints, owner, args.churn, rng)
        print(f"generated {len(nodes) + len(endpoints)} targets, {n_changes} state changes, {n_incidents} incidents,"
              f" 20 maintenance windows in {time.perf_counter() - t0:.1f} s")
        for fmt in ("json", "csv", "md", "html"):
            out = folder / f"report.{fmt}"
            t = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "monitor", "report", "--config", str(folder / "sites.yaml"), "--month",
                 "2026-10", "--by", "site", "--format", fmt, "--output", str(out)],
                cwd=ROOT, capture_output=True, text=True, check=True,
            )
            wall = time.perf_counter() - t
            phases = [line.split("report: ")[1] for line in proc.stderr.splitlines() if line.startswith("report:")]
            print(f"{fmt:5s} {wall:6.2f} s  {out.stat().st_size / 1024:8.0f} KiB   last progress: {phases[-2]}")
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"peak RSS of a report process: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
