"""Hostile and mangled config files: every one is refused with ``file:line`` and exit 2, never a
traceback, a hang or unbounded memory (issue 10, "Config and reload").

The subprocess runs get a memory and time limit, so the code before the fix fails these tests
(MemoryError/timeout) instead of eating the machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.inventory.loader import load_inventory
from monitor.inventory.yaml_lines import load
from tests.test_inventory import BASE, ENV

ROOT = Path(__file__).resolve().parents[1]

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))

HOSTILE: list[tuple[str, bytes, str]] = [
    ("billion laughs", LAUGHS.encode(),
     "bomb.yaml:1: aliases repeat the anchor here too often (they may add at most 4 times the values the file "
     "writes, and at least 10000)"),
    ("recursive anchor", b"nodes: []\nx: &r [*r]\n",
     "bomb.yaml:2: alias *r is inside its own anchor &r (a recursive structure cannot be read)"),
    ("recursive merge key", b"nodes: []\nx: &r {a: 1, <<: *r}\n",
     "bomb.yaml:2: alias *r is inside its own anchor &r (a recursive structure cannot be read)"),
    ("5,000 nested [", b"nodes: " + b"[" * 5000 + b"\n",
     "bomb.yaml:1: nested more than 50 levels deep"),
    ("deep block nesting", ("nodes:\n" + "".join(f"{'  ' * i}k{i}:\n" for i in range(1, 80))).encode(),
     "bomb.yaml:50: nested more than 50 levels deep"),
    ("NUL byte", b"nodes:\n  - a\x00b\n",
     "bomb.yaml:2: character U+0000 (NUL) at column 6 is not allowed in YAML (control characters usually mean "
     "a damaged or binary file)"),
    ("control character", b"nodes: []\n# note\x07\n",
     "bomb.yaml:2: character U+0007 at column 7 is not allowed in YAML (control characters usually mean a "
     "damaged or binary file)"),
    ("not UTF-8", b"nodes:\n  - caf\xe9\n",
     "bomb.yaml:2: the inventory is not UTF-8 text (byte 0xe9 at column 8)"),
    ("impossible date", b"nodes: []\nmaintenance: 2026-13-45\n",
     "bomb.yaml:2: bad timestamp value '2026-13-45' (month must be in 1..12)"),
    ("tagged non-date", b"nodes: !!timestamp 'soon'\n", "bomb.yaml:1: bad timestamp value 'soon'"),
    ("5,000-digit integer", b"nodes: []\npolling: {down_after: " + b"9" * 5000 + b"}\n",
     "bomb.yaml:2: bad int value '" + "9" * 40 + "...' (Exceeds the limit (4300 digits) for integer string "
     "conversion: value has 5000 digits)"),
    ("merge of a scalar", b"nodes: []\nx: &s 1\ny: {<<: *s}\n",
     "bomb.yaml:2: the merge key '<<' takes a mapping or a list of mappings"),
    ("interval .nan", b"nodes:\n  - {id: core, kind: router, address: 127.0.0.1}\npolling: {interval: .nan}\n",
     "bomb.yaml:3: polling.interval: must be a finite number between 0.1s and 1d, got nan"),
    ("flush_interval .nan", b"nodes:\n  - {id: core, kind: router, address: 127.0.0.1}\n"
     b"timeseries: {flush_interval: .nan}\n",
     "bomb.yaml:3: timeseries.flush_interval: must be a finite number between 0.01s and 1h, got nan"),
    ("NUL written as an escape", b"nodes: []\ncustomers_file: \"a\\0b\"\n",
     "bomb.yaml:2: character U+0000 (from an escape such as \\0 or \\x07) is not allowed in a value"),
    ("secret file that never ends", b"credentials: {v2: {version: 2c, community: {file: /dev/zero}}}\nnodes:\n",
     "bomb.yaml:1: credentials.v2.community: secret file /dev/zero is larger than 64 KiB (expected one secret)"),
]
IDS = [h[0] for h in HOSTILE]


def _limited() -> None:
    """The child's ceiling: 1 GiB of address space, 20 s of CPU (the old code grew ~75 MB/s)."""
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    resource.setrlimit(resource.RLIMIT_CPU, (20, 20))


def run_monitor(*args: str) -> subprocess.CompletedProcess[str]:
    r, _ = run_monitor_measured(*args)
    return r


def run_monitor_measured(*args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """The child's result and its own peak RSS in KiB, from os.wait4.

    Why not RUSAGE_CHILDREN: that is the largest child this pytest process ever reaped, so another
    test's bigger child (a 337 MB one, run earlier in the full suite) failed every check here."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "monitor", *args], stdout=out, stderr=err, text=True,
                                cwd=ROOT, preexec_fn=_limited)
        deadline = time.monotonic() + 30
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        while not pid:
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                raise subprocess.TimeoutExpired(proc.args, 30)
            time.sleep(0.01)  # polling the child's exit against the deadline above
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read()), usage.ru_maxrss


@pytest.mark.parametrize(("content", "expected"), [h[1:] for h in HOSTILE[1:]], ids=IDS[1:])
def test_hostile_file_is_one_clear_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes,
                                           expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    Path("bomb.yaml").write_bytes(content)
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ConfigError) as info:
            load_inventory("bomb.yaml", env=ENV)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.problems == [expected]
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert time.monotonic() - started < 20  # a hang, not a slow machine (tracemalloc slows it ~5x)


@pytest.mark.parametrize(("content", "expected"), [h[1:] for h in HOSTILE], ids=IDS)
def test_check_config_exits_2_without_traceback(tmp_path: Path, content: bytes, expected: str) -> None:
    """In a child with a memory ceiling: the billion laughs grew ~75 MB/s forever before the fix."""
    cfg = tmp_path / "bomb.yaml"
    cfg.write_bytes(content)
    started = time.monotonic()
    r, peak_kib = run_monitor_measured("check-config", str(cfg))
    assert (r.returncode, r.stderr) == (2, f"{tmp_path}/{expected}\n")
    assert time.monotonic() - started < 25  # the ceiling is for hangs; the machine may be busy
    assert peak_kib < 300 * 1024, peak_kib  # KiB: the imports, not the file


RUN = ("billion laughs", "recursive anchor", "NUL byte", "interval .nan", "flush_interval .nan")


@pytest.mark.parametrize("content", [h[1] for h in HOSTILE if h[0] in RUN], ids=[i for i in IDS if i in RUN])
def test_run_exits_2_without_traceback(tmp_path: Path, content: bytes) -> None:
    cfg = tmp_path / "bomb.yaml"
    cfg.write_bytes(content)
    r = run_monitor("run", "--config", str(cfg))
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith(f"{cfg}:") and "Traceback" not in r.stderr


def test_oversized_file_is_refused_unread(tmp_path: Path) -> None:
    cfg = tmp_path / "huge.yaml"
    with cfg.open("wb") as fh:
        fh.truncate(64 * 2**20 + 1)
    with pytest.raises(ConfigError) as info:
        load_inventory(cfg, env=ENV)
    assert info.value.problems == [f"{cfg}: the inventory is larger than 64 MiB (customers in bulk belong in "
                                   "customers_file)"]


@pytest.mark.parametrize("opener", [b"[", b"{a: "])
def test_deep_flow_nesting_is_refused_before_the_scanner_reads_it_all(opener: bytes) -> None:
    """Refused at the 51st bracket: the scanner's simple-key look-ahead re-checked every open
    bracket on every token (0.18 s of CPU for 5,000 '[', 6 s under tracemalloc, which the 20 s
    bound above met only on an idle machine); now 1 ms. CPU time, not wall time, and the least of
    three runs: on a loaded machine one run took 84 ms of CPU (cache misses, a GC pass), never all
    three; the quadratic scanner took 180 ms every time."""
    spent = []
    for _ in range(3):
        started = time.process_time()
        with pytest.raises(Exception, match="nested more than 50 levels deep"):
            load((b"nodes: " + opener * 5000 + b"\n").decode())
        spent.append(time.process_time() - started)
    assert min(spent) < 0.05, spent

def test_merge_keys_override_and_shared_blocks_still_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Own keys beat merged ones (YAML's merge rule; it was reported as a duplicate key and the merged
    value kept); earlier merged mappings beat later ones; a block shared by many entries is fine."""
    data, dups = load("a: &a {x: 1, y: 2}\nc: &c {x: 5, z: 1}\nb: {<<: [*a, *c], x: 3}\n")
    assert dups == [] and data["b"] == {"x": 3, "y": 2, "z": 1}
    assert (data["b"].key_lines["x"], data["b"].key_lines["y"], data["b"].key_lines["z"]) == (3, 1, 2)
    monkeypatch.chdir(tmp_path)
    many = "".join(f"  - {{id: n{i}, kind: ap, address: 127.1.{i // 250}.{i % 250 + 2}, parent: core, "
                   "snmp: {<<: *rb, port: 1161}}\n" for i in range(3000))
    Path("sites.yaml").write_text(BASE.replace("snmp: {profile: routeros, credentials: v2}}",
                                               "snmp: &rb {profile: routeros, credentials: v2, timeout: 1}}")
                                  .replace("customers:\n", many + "customers:\n"))
    inv = load_inventory("sites.yaml", env=ENV)
    snmp = inv.targets["n2999"].snmp
    assert snmp is not None and (snmp.profile, snmp.port, snmp.timeout) == ("routeros", 1161, 1.0)


def test_inventory_and_customers_file_that_never_end(tmp_path: Path) -> None:
    """``/dev/zero`` has no size: the reads are bounded all the same (they grew memory forever)."""
    with pytest.raises(ConfigError) as info:
        load_inventory("/dev/zero", env=ENV)
    assert info.value.problems == ["/dev/zero: the inventory is larger than 64 MiB (customers in bulk belong in "
                                   "customers_file)"]
    (tmp_path / "sites.yaml").write_text(BASE + "customers_file: /dev/zero\n")
    with pytest.raises(ConfigError) as info:
        load_inventory(tmp_path / "sites.yaml", env=ENV)
    assert info.value.problems == ["/dev/zero: the customers file must be a regular file of at most 256 MiB"]


def test_a_named_pipe_without_a_writer_does_not_hang(tmp_path: Path) -> None:
    """Opening a FIFO waits for a writer, forever if none comes: the inventory and a secret file
    that are named pipes read as empty instead (a child with a timeout, so the old code fails)."""
    os.mkfifo(tmp_path / "pipe.yaml")
    r = run_monitor("check-config", str(tmp_path / "pipe.yaml"))
    assert (r.returncode, r.stderr) == (2, f"{tmp_path}/pipe.yaml: the file is empty (expected a mapping with at "
                                           "least 'nodes')\n")
    os.mkfifo(tmp_path / "community")
    (tmp_path / "sites.yaml").write_text(BASE.replace("{env: SNMP_COMMUNITY}", "{file: community}"))
    r = run_monitor("check-config", str(tmp_path / "sites.yaml"))
    assert (r.returncode, r.stderr) == (2, f"{tmp_path}/sites.yaml:9: credentials.v2.community: secret file "
                                           "community is empty\n")
