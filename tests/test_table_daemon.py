"""The real daemon observes ONUs through their OLT's table, served by snmpsim, while the table changes.

snmpsim indexes a recording once (OID → byte offset) and reads the lines at request time, so the
test rewrites values *in place* with the same byte length (numbers are zero-padded) and the agent
serves the new values to the running daemon. An ONU whose row turns offline with last down cause
13 (dying gasp) must become DOWN with cause ``dying_gasp``; an ONU whose optical level drops below
-27 dBm DEGRADED; a pinged ONU with an address that the OLT reports as LOS DOWN with cause ``los``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitor.daemon import Daemon
from monitor.state import State, StateChange
from tests.servers.common import free_port, until
from tests.servers.snmpsim import snmpsim
from tests.snmprec_build import Record, snmprec_text, write_snmprec

pytestmark = [pytest.mark.root, pytest.mark.servers]
HW = "1.3.6.1.4.1.2011.6.128.1.1.2"
PORT = 4194304000
# ont id → (serial hex, status, cause, rx 0.01 dBm): every value fixed-width so rewrites keep offsets
ONTS = {1: ("4857544300000001", "1", "-01", "-000001823"),
        2: ("4857544300000002", "1", "-01", "-000001950"),
        3: ("4857544300000003", "1", "-01", "-000002010")}


def recording(onts: dict[int, tuple[str, str, str, str]]) -> dict[str, Record]:
    out: dict[str, Record] = {}
    for ont, (sn, status, cause, rx) in onts.items():
        idx = f"{PORT}.{ont}"
        out[f"{HW}.43.1.3.{idx}"] = ("4x", sn)
        out[f"{HW}.46.1.15.{idx}"] = ("2", status)
        out[f"{HW}.46.1.24.{idx}"] = ("2", cause)
        out[f"{HW}.51.1.4.{idx}"] = ("2", rx)
    return out


def rewrite_in_place(path: Path, new_text: str) -> None:
    """Same length, same inode: snmpsim's open file and index stay valid."""
    old = path.read_bytes()
    data = new_text.encode()
    assert len(data) == len(old)
    with path.open("r+b") as f:
        f.write(data)


def config(folder: Path, snmp_port: int) -> Path:
    (folder / "community").write_text("olt\n")
    path = folder / "sites.yaml"
    path.write_text(f"""
service_classes:
  residencial: {{response_hours: 24, availability_target: 98.0}}
credentials:
  lab: {{version: 2c, community: {{file: community}}}}
polling: {{interval: 1.0, icmp_count: 2, icmp_timeout: 0.3, down_after: 2, up_after: 2, degraded_after: 2}}
daemon: {{state_dir: var, metrics_listen: ""}}
nodes:
  - id: olt-1
    kind: olt
    address: 127.0.0.1
    snmp: {{profile: generic, credentials: lab, port: {snmp_port}, timeout: 0.3, retries: 1, table: huawei-olt}}
customers:
  - id: C-1
    name: Uno
    service_class: residencial
    endpoints:
      - {{id: onu-power, kind: onu, parent: olt-1, onu_serial: HWTC00000001}}
      - {{id: onu-drift, kind: onu, parent: olt-1, onu_serial: "4857544300000002"}}
      - {{id: onu-pinged, kind: onu, parent: olt-1, onu_index: "{PORT}.3", address: 127.0.1.3}}
""")
    return path


async def test_onu_going_offline_in_the_olt_table_turns_its_endpoint_down_with_the_cause(tmp_path: Path) -> None:
    src = tmp_path / "olt.snmprec"
    write_snmprec(src, recording(ONTS))
    snmp_port = free_port()
    with snmpsim(tmp_path / "snmpsim", snmp_port, [str(src)]):
        served = tmp_path / "snmpsim" / "data" / "olt.snmprec"
        daemon = Daemon(config(tmp_path, snmp_port))
        task = asyncio.create_task(daemon.run())
        await until(lambda: daemon.pipeline is not None, 30, "daemon started")
        assert daemon.pipeline is not None
        noted: list[StateChange] = []
        forward = daemon.pipeline.note

        def spy(change: StateChange) -> None:  # observe what correlation is handed, then hand it on
            noted.append(change)
            forward(change)

        daemon.pipeline.note = spy  # type: ignore[method-assign]

        def state(tid: str) -> State:
            return daemon.states[tid].state

        try:
            await until(lambda: all(state(t) == State.UP for t in ("onu-power", "onu-drift", "onu-pinged")),
                        60, "the three ONUs up from the table")
            changed = dict(ONTS)
            changed[1] = ("4857544300000001", "2", "+13", "2147483647")  # dying gasp: lost mains power
            changed[2] = ("4857544300000002", "1", "-01", "-000002850")  # -28.5 dBm < -27 dBm
            changed[3] = ("4857544300000003", "2", "+02", "2147483647")  # LOSi: the light stopped
            rewrite_in_place(served, snmprec_text(recording(changed)))
            await until(lambda: state("onu-power") == State.DOWN and state("onu-drift") == State.DEGRADED
                        and state("onu-pinged") == State.DOWN, 60, "down, degraded and down")
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 15)

    downs = {c.target: c for c in noted if c.new == State.DOWN}
    assert downs["onu-power"].cause == "dying_gasp"
    assert downs["onu-power"].reason == (
        "2 consecutive failed polls: offline in olt-1's table, last down cause dying_gasp")
    assert downs["onu-pinged"].cause == "los"
    degraded = next(c for c in noted if c.target == "onu-drift" and c.new == State.DEGRADED)
    assert degraded.reason == "onu rx -28.5dBm < -27dBm" and degraded.cause is None


AIRMAX = "1.3.6.1.4.1.41112.1.4.7.1"
STATIONS = {"a": (0x24, 0xA4, 0x3C, 1, 2, 3), "b": (0x24, 0xA4, 0x3C, 4, 5, 6)}


def stations(present: list[str]) -> dict[str, Record]:
    out: dict[str, Record] = {}
    for name in present:
        mac = ".".join(map(str, STATIONS[name]))
        out[f"{AIRMAX}.3.1.{mac}"] = ("2", "-61")
        out[f"{AIRMAX}.6.1.{mac}"] = ("2", "88")
    return out


def ap_config(folder: Path, snmp_port: int) -> Path:
    (folder / "community").write_text("ap\n")
    path = folder / "sites.yaml"
    path.write_text(f"""
service_classes:
  residencial: {{response_hours: 24, availability_target: 98.0}}
credentials:
  lab: {{version: 2c, community: {{file: community}}}}
polling: {{interval: 1.0, icmp_count: 2, icmp_timeout: 0.3, down_after: 2, up_after: 2}}
daemon: {{state_dir: var, metrics_listen: ""}}
nodes:
  - id: ap-1
    kind: ap
    address: 127.0.0.1
    snmp: {{profile: generic, credentials: lab, port: {snmp_port}, timeout: 0.3, retries: 1, table: airos-stations}}
customers:
  - id: C-1
    name: Uno
    service_class: residencial
    endpoints:
      - {{id: cpe-a, kind: cpe, parent: ap-1, station_mac: "24:a4:3c:01:02:03"}}
      - {{id: cpe-b, kind: cpe, parent: ap-1, station_mac: 24A43C040506}}
""")
    return path


async def test_station_vanishing_from_the_ap_table_turns_its_endpoint_down(tmp_path: Path) -> None:
    """The AP's agent is restarted on the same port with one station fewer (a station cannot be removed
    in place); while it is away the walks fail, which is no evidence about the stations either way."""
    src = tmp_path / "ap.snmprec"
    write_snmprec(src, stations(["a", "b"]))
    snmp_port = free_port()
    daemon = Daemon(ap_config(tmp_path, snmp_port))
    task: asyncio.Task[None] | None = None
    try:
        with snmpsim(tmp_path / "sim1", snmp_port, [str(src)]):
            task = asyncio.create_task(daemon.run())
            await until(lambda: all(t in daemon.states and daemon.states[t].state == State.UP
                                    for t in ("cpe-a", "cpe-b")), 60, "both stations up from the table")
        write_snmprec(src, stations(["a"]))
        with snmpsim(tmp_path / "sim2", snmp_port, [str(src)]):
            await until(lambda: daemon.states["cpe-b"].state == State.DOWN, 60, "cpe-b down")
            assert daemon.states["cpe-a"].state == State.UP
            assert daemon.store is not None
            downs = [c for c in daemon.store.changes(targets=["cpe-b"]) if c.new == State.DOWN]
            assert [c.reason for c in downs] == ["2 consecutive failed polls: absent from ap-1's table"]
    finally:
        daemon.request_stop()
        if task is not None:
            await asyncio.wait_for(task, 15)
