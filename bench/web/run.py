"""The public status page under a crowd: requests/s on one core, with the cache, quiet and during an outage.

    .venv/bin/python -m bench.web.run [--targets 5000] [--seconds 5] [--rounds 3] [--connections 64]

Generates the report bench's network (1 core, 10 towers, 200 APs, the rest customer CPEs) and its
October store, then two stores: *quiet* (no open incident) and *outage* (100 open outages, one per
AP with 20 customers each, and a staff estimate written every second, so the page is rebuilt every
2 s — the most the cache allows). Each store gets a real status page server (``StatusServer.serve``,
the daemon's code) in its own process pinned to CPU 0; ``wrk`` runs in another process pinned to
CPU 1. Rounds interleave the cases; the numbers printed are requests/s per round and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.report.run import NOV, write_config, write_store  # noqa: E402

SERVER_CPU, CLIENT_CPU = 0, 1
LUA = """wrk.method = "POST"
wrk.body = "number=C-00042&digits=0000"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
"""


def outage(db: Path, endpoints: list[str], owner: dict[str, str]) -> None:
    """100 APs down now: 100 open outage incidents with 20 customers each."""
    con = sqlite3.connect(db)
    seq = con.execute("SELECT MAX(seq) FROM incidents").fetchone()[0] + 1
    for a in range(100):
        iid, opened = f"INC-{seq + a:06d}", NOV - 3600 + a * 10
        eps = [e for i, e in enumerate(endpoints) if i % 200 == a][:20]
        con.execute(
            "INSERT INTO incidents (id, seq, kind, basis, root, status, opened_at, updated_at, last_update)"
            " VALUES (?, ?, 'outage', 'outage', ?, 'open', ?, ?, ?)", (iid, seq + a, f"ap-{a}", opened, opened, opened))
        con.execute(
            "INSERT INTO incident_events (ts, incident, event, kind, root, affected_endpoints, affected_customers,"
            " affected_nodes) VALUES (?, ?, 'opened', 'outage', ?, ?, ?, ?)",
            (opened, iid, f"ap-{a}", json.dumps(eps), json.dumps(sorted(owner[e] for e in eps)),
             json.dumps([f"ap-{a}"])))
    con.commit()
    con.close()


def quiet(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("UPDATE incidents SET status = 'resolved', closed_at = ? WHERE status = 'open'", (NOV - 7200,))
    con.commit()
    con.close()


# ---------------------------------------------------------------- the server process


async def serve(config: Path, db: Path, port: int, churn: bool) -> None:
    from monitor.correlate.store import IncidentStore
    from monitor.inventory.loader import load_inventory
    from monitor.web.config import StatusPageSettings
    from monitor.web.server import StatusServer

    class Clock:  # October's last hour, running in real time
        t0 = time.monotonic()

        def now(self) -> float:
            return NOV - 600 + time.monotonic() - self.t0

        def monotonic(self) -> float:
            return time.monotonic()

    inv = load_inventory(config)
    settings = StatusPageSettings(listen=f"127.0.0.1:{port}", title="Bench", lookup_per_minute=10**9)
    inv = replace(inv, status_page=settings)
    server = StatusServer(settings, db, inv, Clock())
    await server.start()
    task = asyncio.create_task(server.serve())
    await server.bars_ready.wait()
    print("ready", flush=True)
    writer = IncidentStore(db)
    open_ids = [r.id for r in writer.incidents()]
    lags: list[float] = []

    async def lag() -> None:
        """What a poll sharing this event loop would feel: how late a 10 ms timer fires."""
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - t - 0.01)
            del lags[:-2000]

    lag_task = asyncio.create_task(lag())  # runs until the process is killed
    n = 0
    while True:
        await asyncio.sleep(1.0)
        if churn and open_ids:
            n += 1
            eta = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOV + 3600 + n * 60))
            writer.add_action(open_ids[n % len(open_ids)], "eta", "bench", eta, NOV)
        for t in (task, lag_task):
            if t.done():
                t.result()
        if server.cache is not None:  # how often the page really was rebuilt and rendered meanwhile
            recent = sorted(lags)
            db.with_suffix(".stats").write_text(json.dumps({
                "snapshots": server.cache.version, "renders": server.cache.renders,
                "loop_lag_ms_p50_p99_max": [round(1000 * recent[int(q * (len(recent) - 1))], 1)
                                            for q in (0.5, 0.99, 1.0)] if recent else None}))


def start_server(config: Path, db: Path, port: int, churn: bool) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "bench.web.run", "--serve", str(config), str(db), str(port), str(int(churn))]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, {SERVER_CPU}))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc


def wrk(url: str, seconds: int, connections: int, script: Path | None = None) -> float:
    cmd = ["taskset", "-c", str(CLIENT_CPU), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m is None or bad is not None:
        raise SystemExit(f"wrk failed or got errors:\n{out}")
    return float(m.group(1))


def render_ms(config: Path, db: Path) -> float:
    """One uncached rendering of the company page (what the cache saves per request)."""
    from monitor.inventory.loader import load_inventory
    from monitor.web.availability import read_bars
    from monitor.web.config import StatusPageSettings
    from monitor.web.render import Page, Renderer
    from monitor.web.snapshot import build
    from monitor.web.source import StatusSource

    inv = load_inventory(config)
    src = StatusSource(db)
    snap = build(inv, src.rows(), NOV - 600)
    src.close()
    bars = read_bars(db, inv, NOV - 600, "UTC", 90)
    r = Renderer(StatusPageSettings())
    t = time.perf_counter()
    for _ in range(20):
        r.html(inv, snap, bars, Page(None), "es")
    return (time.perf_counter() - t) / 20 * 1000


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        config_arg, db_arg, port_arg, churn_arg = sys.argv[2:6]  # strings; the names below are typed
        asyncio.run(serve(Path(config_arg), Path(db_arg), int(port_arg), churn_arg == "1"))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=5000)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (scripts/setup --test installs it)")
    from tests.servers.common import free_port

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        nodes, endpoints, owner = write_config(folder, args.targets)
        (folder / "var").mkdir()
        base = folder / "var" / "monitor.db"
        write_store(base, nodes, endpoints, owner, 1.0, random.Random(7))
        dbs = {"quiet": folder / "quiet.db", "outage": folder / "outage.db"}
        for name, db in dbs.items():
            shutil.copy(base, db)
            quiet(db)
            if name == "outage":
                outage(db, endpoints, owner)
        config = folder / "sites.yaml"
        for name, db in dbs.items():
            print(f"{name}: one uncached rendering of the company page: {render_ms(config, db):.1f} ms")
        ports = {name: free_port() for name in dbs}
        procs = {name: start_server(config, db, ports[name], churn=name == "outage") for name, db in dbs.items()}
        script = folder / "post.lua"
        script.write_text(LUA)
        cases = [(f"{name} {what}", ports[name], path, lua)
                 for name in dbs for what, path, lua in (("/", "/", None), ("/m/arauca", "/m/arauca", None),
                                                          ("/status.json", "/status.json", None),
                                                          ("lookup", "/lookup", script))]
        results: dict[str, list[float]] = {c[0]: [] for c in cases}
        try:
            for r in range(args.rounds):
                for label, port, path, lua in cases:
                    # every lookup answer takes >= 250 ms (no timing oracle): throughput needs connections
                    conns = args.connections * 8 if lua is not None else args.connections
                    rps = wrk(f"http://127.0.0.1:{port}{path}", args.seconds, conns, lua)
                    results[label].append(rps)
                    print(f"round {r + 1}  {label:26s} {rps:9.0f} req/s  ({conns} connections)", flush=True)
        finally:
            for p in procs.values():
                p.kill()
                p.wait()
        for name, db in dbs.items():
            print(f"{name} server: {db.with_suffix('.stats').read_text()}")
        print(f"\nmedian of {args.rounds} rounds, {args.seconds:g} s each, {args.connections} connections,"
              f" server on CPU {SERVER_CPU}, wrk on CPU {CLIENT_CPU}:")
        for label, values in results.items():
            print(f"  {label:26s} {statistics.median(values):9.0f} req/s   ({', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
