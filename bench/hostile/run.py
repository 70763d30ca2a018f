"""Hostile soak: the real daemon polls ~1,000 loopback targets while hostile SNMP agents and an ICMP
spoofer run, compared with the same daemon on the same inventory in a quiet run (needs root).

    .venv/bin/python bench/hostile/run.py --duration 60 --rounds 2
    .venv/bin/python bench/hostile/run.py --duration 600 --rounds 1   # the issue's 10 minutes

Inventory: 1 core router, 4 healthy SNMP nodes (a real net-snmp ``snmpd`` on 127.50.0.1-4),
4 SNMP nodes behind hostile agents (127.60.0.1-4), 4 APs, ``--endpoints`` healthy CPEs
(127.100.x.y, ICMP) and ``--down`` CPEs whose echo requests nftables drops (they are DOWN, and stay
DOWN). Every target is pinged; SNMP nodes are also polled (generic profile, v2c, a random community
made of letters, given to the daemon through the environment).

Hostile run (each agent its own process, tests/hostile_snmp.py): ``garbage`` relays snmpd's answer
after 3 garbage datagrams and sprays 50 unsolicited garbage datagrams/s at the poller;
``wrong-community`` relays after 3 replies with a wrong community from another port; ``truncated``
relays after 3 truncated copies of a Response carrying the real community; ``endless`` answers
GETBULK without end. bench/hostile/icmp_spoofer.py sends ``--spoof-pps`` forged echo replies (guessed
id/seq/token, the probe's payload pattern) from the DOWN CPEs' addresses and random CPE addresses.
Quiet run: the same 4 nodes behind plain relays (no noise), no spoofer.

The daemon runs as ``monitor run`` in its own process, logging to a file at INFO. Runs alternate
quiet/hostile, ``--rounds`` times. Per run: CPU of the daemon process from the first completed poll
pass to the end (% of one core; the first pass itself is reported apart), state changes by new
state from ``/metrics`` (expected exactly: up = healthy targets, down = ``--down``; anything else is
a false change), SNMP polls by result, ignored SNMP datagrams and ICMP stray replies, log lines, and
whether any 6 consecutive characters of the community appear in the log. All traffic stays on
127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import secrets
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.firewall import icmp_block  # noqa: E402
from tests.servers.common import free_port  # noqa: E402
from tests.servers.snmpd import snmpd  # noqa: E402

FIRST_CPE = int(ipaddress.IPv4Address("127.100.0.1"))
HEALTHY_SNMP = [f"127.50.0.{i}" for i in range(1, 5)]
HOSTILE = {  # node id → (address, hostile_snmp arguments in the hostile run)
    "garbage": ("127.60.0.1", ["--mode", "proxy", "--noise", "garbage", "garbage", "garbage", "--spray", "50"]),
    "wrong-community": ("127.60.0.2", ["--mode", "proxy", "--noise", *["wrong-community-other-port"] * 3]),
    "truncated": ("127.60.0.3", ["--mode", "proxy", "--noise", "truncated", "truncated", "truncated"]),
    "endless": ("127.60.0.4", ["--mode", "endless"]),
}
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    kind: str
    seconds: float
    first_pass_s: float
    first_pass_cpu: float
    cpu_pct: float
    changes: dict[str, float]
    snmp: dict[str, float]
    ignored: dict[str, float]
    icmp_stray: float
    icmp_rejected: float
    log_lines: int
    messages: dict[str, int]
    leaked: list[str]
    expected_up: int
    expected_down: int

    @property
    def false_changes(self) -> int:
        c = dict(self.changes)
        extra = abs(c.pop("up", 0) - self.expected_up) + abs(c.pop("down", 0) - self.expected_down)
        return int(extra + sum(c.values()))


def cpe(i: int) -> str:
    return str(ipaddress.IPv4Address(FIRST_CPE + i))


def write_inventory(folder: Path, endpoints: int, down: int, snmp_port: int, metrics_port: int,
                    interval: float) -> int:
    """The config; returns the number of targets that must end UP."""
    aps = 4
    snmp = f"snmp: {{profile: generic, credentials: v2, port: {snmp_port}}}"
    lines = [
        "municipalities: [{id: m, name: M}]",
        "sites: [{id: s, municipality: m, name: S}]",
        "service_classes: {residencial: {response_hours: 24, availability_target: 98.0}}",
        f"polling: {{interval: {interval}}}",
        f"daemon: {{state_dir: var, metrics_listen: '127.0.0.1:{metrics_port}', log_level: info}}",
        "credentials:",
        "  v2: {version: 2c, community: {env: BENCH_COMMUNITY}}",
        "customers_file: customers.csv",
        "nodes:",
        "  - {id: core, kind: router, address: 127.0.0.1, site: s}",
    ]
    snmp_nodes = [(f"snmp-{i}", a) for i, a in enumerate(HEALTHY_SNMP)]
    snmp_nodes += [(f"hostile-{name}", a) for name, (a, _) in HOSTILE.items()]
    lines += [f"  - {{id: {nid}, kind: ap, address: {a}, parent: core, {snmp}}}" for nid, a in snmp_nodes]
    lines += [f"  - {{id: ap-{i}, kind: ap, address: 127.99.0.{i + 1}, parent: core}}" for i in range(aps)]
    (folder / "sites.yaml").write_text("\n".join(lines) + "\n")
    rows = ["customer_id,name,service_class,email,phone,language,endpoint_id,endpoint_kind,address,parent"]
    rows += [f"C{i},Cliente {i},residencial,,,es,cpe-{i},cpe,{cpe(i)},ap-{i % aps}" for i in range(endpoints + down)]
    (folder / "customers.csv").write_text("\n".join(rows) + "\n")
    return 1 + len(HEALTHY_SNMP) + len(HOSTILE) + aps + endpoints


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def scrape(port: int) -> dict[tuple[str, str], float]:
    """``{(metric name, labels text): value}`` from the daemon's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)(\{[^}]*\})? (\S+)$", line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def by_label(metrics: dict[tuple[str, str], float], name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, labels), v in metrics.items():
        m = re.search(label + r'="([^"]*)"', labels)
        if n == name and m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + v
    return out


def wait_for_line(log: Path, text: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited {proc.returncode}: {log.read_text()[-2000:]}")
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise TimeoutError(f"no {text!r} in {log} after {timeout} s")


def start(argv: list[str], stack: ExitStack, **kw: Any) -> subprocess.Popen[bytes]:
    proc: subprocess.Popen[bytes] = subprocess.Popen(argv, start_new_session=True, **kw)

    def stop() -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    stack.callback(stop)
    return proc


def one_run(kind: str, args: argparse.Namespace, snmp_port: int, tmp: Path, blocked: list[str],
            community: str) -> Run:
    folder = Path(tempfile.mkdtemp(dir=tmp, prefix=f"{kind}-"))
    metrics_port = free_port()
    expected_up = write_inventory(folder, args.endpoints, args.down, snmp_port, metrics_port, args.interval)
    log = folder / "daemon.log"
    py = sys.executable
    with ExitStack() as stack:
        for _name, (address, hostile_args) in HOSTILE.items():
            agent_args = hostile_args if kind == "hostile" else ["--mode", "proxy"]
            if "proxy" in agent_args:
                agent_args = [*agent_args, "--upstream", f"{HEALTHY_SNMP[0]}:{snmp_port}"]
            start([py, "-m", "tests.hostile_snmp", "--host", address, "--port", str(snmp_port), *agent_args],
                  stack, cwd=ROOT)
        if kind == "hostile":
            start([py, str(ROOT / "bench/hostile/icmp_spoofer.py"), "--pps", str(args.spoof_pps),
                   "--sources", *blocked], stack)
        env = {**os.environ, "BENCH_COMMUNITY": community}
        with open(log, "wb") as out:
            daemon = start([py, "-m", "monitor", "run", "--config", str(folder / "sites.yaml")], stack,
                           cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        wait_for_line(log, "first poll pass complete", 120, daemon)
        first_s, first_cpu = time.monotonic() - t0, cpu_of(daemon.pid)
        time.sleep(args.duration)
        cpu = cpu_of(daemon.pid) - first_cpu
        elapsed = time.monotonic() - t0 - first_s
        metrics = scrape(metrics_port)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    text = log.read_text(errors="replace")
    leaked = sorted({community[i:i + 6] for i in range(len(community) - 5) if community[i:i + 6] in text})
    return Run(
        kind, elapsed, first_s, first_cpu, 100 * cpu / elapsed,
        by_label(metrics, "monitor_state_changes_total", "new_state"),
        by_label({k: v for k, v in metrics.items() if 'probe="snmp"' in k[1]}, "monitor_polls_total", "result"),
        by_label(metrics, "monitor_snmp_ignored_replies_total", "reason"),
        metrics.get(("monitor_icmp_stray_replies_total", ""), 0.0),
        metrics.get(("monitor_icmp_rejected_replies_total", ""), 0.0),
        len(text.splitlines()), dict(Counter(a or b for a, b in re.findall(r'msg="([^"]*)"|msg=(\S+)', text))),
        leaked, expected_up, args.down,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=1000, help="healthy CPEs")
    ap.add_argument("--down", type=int, default=20, help="CPEs that do not answer (stay DOWN)")
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per run after the first poll pass")
    ap.add_argument("--rounds", type=int, default=2, help="quiet/hostile pairs, interleaved")
    ap.add_argument("--spoof-pps", type=int, default=200)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (raw ICMP, nftables)")
    snmp_port = free_port(socket.SOCK_DGRAM)
    community = "".join(secrets.choice(string.ascii_letters) for _ in range(20))
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp, icmp_block() as block, \
            snmpd(Path(tmp) / "snmpd", snmp_port, HEALTHY_SNMP, community):
        blocked = [cpe(args.endpoints + i) for i in range(args.down)]
        block.block(*blocked)
        for r in range(args.rounds):
            for kind in ("quiet", "hostile") if r % 2 == 0 else ("hostile", "quiet"):
                run = one_run(kind, args, snmp_port, Path(tmp), blocked, community)
                runs.append(run)
                print(f"{run.kind:7} {run.seconds:5.0f}s  first pass {run.first_pass_s:4.1f}s"
                      f" ({run.first_pass_cpu:4.1f}s CPU)"
                      f"  CPU {run.cpu_pct:5.1f}%  changes {run.changes}  false {run.false_changes}"
                      f"  snmp polls {run.snmp}  ignored {run.ignored}"
                      f"  icmp stray/rejected {run.icmp_stray:.0f}/{run.icmp_rejected:.0f}"
                      f"  log lines {run.log_lines} {run.messages}  leaked {run.leaked}", flush=True)
    quiet = [r.cpu_pct for r in runs if r.kind == "quiet"]
    hostile = [r.cpu_pct for r in runs if r.kind == "hostile"]
    q, h = sum(quiet) / len(quiet), sum(hostile) / len(hostile)
    print(f"mean CPU quiet {q:.2f}%  hostile {h:.2f}%  ratio {h / q:.3f}  "
          f"false changes {sum(r.false_changes for r in runs)}  leaks {sum(len(r.leaked) for r in runs)}")


if __name__ == "__main__":
    main()
