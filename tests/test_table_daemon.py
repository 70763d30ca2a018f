"""The real daemon observes ONUs through their OLT's table, served by snmpsim, while the table changes.

snmpsim indexes a recording once (OID → byte offset) and reads the lines at request time, so the
test rewrites values *in place* with the same byte length (numbers are zero-padded) and the agent
serves the new values to the running daemon. An ONU whose row turns offline with last down cause
13 (dying gasp) must become DOWN with cause ``dying_gasp``; an ONU whose optical level drops below
-27 dBm DEGRADED; a pinged ONU with an address that the OLT reports as LOS DOWN with cause ``los``.
A station missing from a restarted AP agent's table is DOWN; all ONUs of one PON port going LOS are
one incident rooted at that port's node (docs/config.md, "PON ports in the topology").
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from monitor.correlate.incidents import IncidentEvent
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
    return ports_recording({(PORT, ont): row for ont, row in onts.items()})


def ports_recording(onts: dict[tuple[int, int], tuple[str, str, str, str]]) -> dict[str, Record]:
    """(PON port ifIndex, ont id) → (serial hex, status, cause, rx): the Huawei ONT table rows."""
    out: dict[str, Record] = {}
    for (port, ont), (sn, status, cause, rx) in onts.items():
        idx = f"{port}.{ont}"
        out[f"{HW}.43.1.3.{idx}"] = ("4x", sn)
        out[f"{HW}.46.1.15.{idx}"] = ("2", status)
        out[f"{HW}.46.1.24.{idx}"] = ("2", cause)
        out[f"{HW}.51.1.4.{idx}"] = ("2", rx)
    return out


def rewrite_in_place(path: Path, new_text: str) -> None:
    """Same length, same inode: snmpsim's open file and index stay valid.

    snmpsim keeps serving from its read buffer until the file's mtime, compared in whole seconds, differs
    from the one it saw when it last opened the file: a write in that same second, or one it read while
    half written, would go unseen for good. So once the new text is in place the mtime moves on to a
    later whole second than any it can have seen, and its next request reopens the complete file."""
    old = path.read_bytes()
    data = new_text.encode()
    assert len(data) == len(old)
    before = path.stat().st_mtime_ns
    with path.open("r+b") as f:
        f.write(data)
    later = (max(before, path.stat().st_mtime_ns) // 10**9 + 1) * 10**9
    os.utime(path, ns=(later, later))


def site_config(folder: Path, snmp_port: int, node: str, table: str, endpoints: list[str], *,
                polling: str = "icmp_timeout: 0.3, down_after: 2, up_after: 2", extra: str = "",
                snmp_timeout: float = 0.3) -> Path:
    """One parent walking ``table`` on snmpsim's port, with ``endpoints`` (YAML flow mappings) under it.
    The parent's kind is its id's prefix, and so is the community (snmpsim's: the recording's name)."""
    kind = node.split("-")[0]
    (folder / "community").write_text(f"{kind}\n")
    path = folder / "sites.yaml"
    path.write_text(f"""
service_classes:
  residencial: {{response_hours: 24, availability_target: 98.0}}
credentials:
  lab: {{version: 2c, community: {{file: community}}}}
polling: {{interval: 1.0, icmp_count: 2, {polling}}}
{extra}
daemon: {{state_dir: var, metrics_listen: ""}}
nodes:
  - id: {node}
    kind: {kind}
    address: 127.0.0.1
    snmp: {{profile: generic, credentials: lab, port: {snmp_port}, timeout: {snmp_timeout}, retries: 1, table: {table}}}
customers:
  - id: C-1
    name: Uno
    service_class: residencial
    endpoints:
""" + "".join(f"      - {e}\n" for e in endpoints))
    return path


def config(folder: Path, snmp_port: int) -> Path:
    return site_config(folder, snmp_port, "olt-1", "huawei-olt", [
        "{id: onu-power, kind: onu, parent: olt-1, onu_serial: HWTC00000001}",
        '{id: onu-drift, kind: onu, parent: olt-1, onu_serial: "4857544300000002"}',
        f'{{id: onu-pinged, kind: onu, parent: olt-1, onu_index: "{PORT}.3", address: 127.0.1.3}}',
    ], polling="icmp_timeout: 0.3, down_after: 2, up_after: 2, degraded_after: 2")


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


def stations(present: list[str], weak: str = "") -> dict[str, Record]:
    """The AP's station table; the ``weak`` station at -85 dBm and 45 % CCQ (same widths: rewritable in place)."""
    out: dict[str, Record] = {}
    for name in present:
        mac = ".".join(map(str, STATIONS[name]))
        out[f"{AIRMAX}.3.1.{mac}"] = ("2", "-85" if name == weak else "-61")
        out[f"{AIRMAX}.6.1.{mac}"] = ("2", "45" if name == weak else "88")
    return out


def ap_config(folder: Path, snmp_port: int) -> Path:
    return site_config(folder, snmp_port, "ap-1", "airos-stations", [
        '{id: cpe-a, kind: cpe, parent: ap-1, station_mac: "24:a4:3c:01:02:03"}',
        "{id: cpe-b, kind: cpe, parent: ap-1, station_mac: 24A43C040506}",
    ], polling="icmp_timeout: 0.3, down_after: 2, up_after: 2, degraded_after: 2, thresholds: {ccq_pct_min: 60}")


def test_snmpsim_serves_each_rewrite_even_several_in_one_second(tmp_path: Path) -> None:
    """Rewrites a second apart or less: snmpsim serves the last one every time, never its buffered copy
    (it failed the AP test once, stuck on the healthy values for 60 s)."""
    src = tmp_path / "ap.snmprec"
    write_snmprec(src, stations(["a", "b"]))
    snmp_port = free_port()
    signal = f"{AIRMAX}.3.1.36.164.60.1.2.3"

    def served_signal() -> str:
        out = subprocess.run(["snmpget", "-v2c", "-c", "ap", "-t", "5", "-r", "1", "-Oqv", f"127.0.0.1:{snmp_port}",
                              signal], capture_output=True, text=True, timeout=30, check=True)
        return out.stdout.strip()

    with snmpsim(tmp_path / "sim", snmp_port, [str(src)]):
        served = tmp_path / "sim" / "data" / "ap.snmprec"
        assert served_signal() == "-61"
        for weak in ("a", "", "a", "", "a", ""):
            rewrite_in_place(served, snmprec_text(stations(["a", "b"], weak=weak)))
            assert served_signal() == ("-85" if weak else "-61")


async def test_station_vanishing_from_the_ap_table_turns_its_endpoint_down(tmp_path: Path) -> None:
    """Station a's signal and CCQ drop below the thresholds (rewritten in place): DEGRADED with both values.
    Then the AP's agent is restarted on the same port with station b gone (a row cannot be removed in
    place); while it is away the walks fail, which is no evidence about the stations either way."""
    src = tmp_path / "ap.snmprec"
    write_snmprec(src, stations(["a", "b"]))
    snmp_port = free_port()
    daemon = Daemon(ap_config(tmp_path, snmp_port))
    events: list[IncidentEvent] = []
    daemon.incident_sinks.append(events.extend)
    task: asyncio.Task[None] | None = None
    try:
        with snmpsim(tmp_path / "sim1", snmp_port, [str(src)]):
            task = asyncio.create_task(daemon.run())
            await until(lambda: all(t in daemon.states and daemon.states[t].state == State.UP
                                    for t in ("cpe-a", "cpe-b")), 60, "both stations up from the table")
            rewrite_in_place(tmp_path / "sim1" / "data" / "ap.snmprec", snmprec_text(stations(["a", "b"], weak="a")))
            await until(lambda: daemon.states["cpe-a"].state == State.DEGRADED, 60, "cpe-a degraded")
        write_snmprec(src, stations(["a"], weak="a"))
        with snmpsim(tmp_path / "sim2", snmp_port, [str(src)]):
            await until(lambda: daemon.states["cpe-b"].state == State.DOWN, 60, "cpe-b down")
            assert daemon.states["cpe-a"].state == State.DEGRADED
            assert daemon.store is not None
            downs = [c for c in daemon.store.changes(targets=["cpe-b"]) if c.new == State.DOWN]
            assert [c.reason for c in downs] == ["2 consecutive failed polls: absent from ap-1's table"]
            weak = [c for c in daemon.store.changes(targets=["cpe-a"]) if c.new == State.DEGRADED]
            assert [c.reason for c in weak] == ["signal -85dBm < -80dBm, ccq 45% < 60%"]
            await until(lambda: any(e.event == "opened" and e.kind == "single" for e in events), 60,
                        "an incident for the station")
    finally:
        daemon.request_stop()
        if task is not None:
            await asyncio.wait_for(task, 15)
    # one customer's station left an AP that still answers: that customer's own single incident; the weak
    # station is no failure: a technician-only degraded incident at its AP, with its values (rule 14)
    assert [(e.event, e.kind, e.root, e.affected_customers, e.detail) for e in events if e.event == "opened"] == [
        ("opened", "degraded", "ap-1", ("C-1",), "weak levels below ap-1: cpe-a (C-1) signal -85dBm < -80dBm, "
                                                  "ccq 45% < 60%"),
        ("opened", "single", "cpe-b", ("C-1",), "")]


# -- a fibre cut on one PON port, through the real daemon ----------------------------------------------------

PORT_A, PORT_B = PORT + 256, PORT + 512  # Huawei 0/0/1 and 0/0/2
FIBRE = {(PORT_A, 1): ("4857544300000011", "1", "-01", "-000001823"),
         (PORT_A, 2): ("4857544300000012", "1", "-01", "-000001950"),
         (PORT_A, 3): ("4857544300000013", "1", "-01", "-000002010"),
         (PORT_B, 1): ("4857544300000021", "1", "-01", "-000001900"),
         (PORT_B, 2): ("4857544300000022", "1", "-01", "-000001910"),
         (PORT_B, 3): ("4857544300000023", "1", "-01", "-000001920")}


def fibre_config(folder: Path, snmp_port: int) -> Path:
    """Three ONUs on each of two ports: placed by onu_index, one of them by serial and pon_port."""
    onus = ["{id: onu-a1, kind: onu, parent: olt-1, onu_serial: HWTC00000011, pon_port: 0/0/1}"]
    onus += [f'{{id: onu-a{o}, kind: onu, parent: olt-1, onu_index: "{PORT_A}.{o}"}}' for o in (2, 3)]
    onus += [f'{{id: onu-b{o}, kind: onu, parent: olt-1, onu_index: "{PORT_B}.{o}"}}' for o in (1, 2, 3)]
    return site_config(folder, snmp_port, "olt-1", "huawei-olt", onus, snmp_timeout=0.45,
                       polling="icmp_timeout: 0.8, down_after: 2, up_after: 2",
                       extra="correlation: {settle: 1.0, window: 4.0, hold_down: 1.0, grace: 1.0}")


@pytest.mark.parametrize(("code", "kind"), [("+01", "outage"), ("+13", "power")], ids=["los", "dying_gasp"])
async def test_a_pon_ports_onus_going_los_are_one_incident_rooted_at_that_port(
    tmp_path: Path, code: str, kind: str
) -> None:
    """All three ONUs of port 0/0/1 report LOS while the OLT and port 0/0/2 are fine: one incident at
    olt-1:pon-0-0-1 with the three (not three singles, not the whole OLT), resolved when the light is back.
    Its kind is what their last down cause says (correlation rule 13): LOS, a fibre cut, an ``outage``
    (the crew); dying gasp (Huawei 13), a power cut in that area, ``power`` (never an outage)."""
    src = tmp_path / "olt.snmprec"
    write_snmprec(src, ports_recording(FIBRE))
    snmp_port = free_port()
    # port 0/0/1's ONUs offline with last down cause LOS(1) or dying gasp(13), their optics unreadable;
    # 0/0/2 unchanged
    cut = {k: ((v[0], "2", code, "2147483647") if k[0] == PORT_A else v) for k, v in FIBRE.items()}
    with snmpsim(tmp_path / "snmpsim", snmp_port, [str(src)]):
        served = tmp_path / "snmpsim" / "data" / "olt.snmprec"
        daemon = Daemon(fibre_config(tmp_path, snmp_port))
        events: list[IncidentEvent] = []
        daemon.incident_sinks.append(events.extend)
        task = asyncio.create_task(daemon.run())
        onus = [f"onu-{p}{o}" for p in "ab" for o in (1, 2, 3)]
        try:
            await until(lambda: all(t in daemon.states and daemon.states[t].state == State.UP
                                    for t in [*onus, "olt-1:pon-0-0-1", "olt-1:pon-0-0-2"]), 60, "all up")
            rewrite_in_place(served, snmprec_text(ports_recording(cut)))
            await until(lambda: any(e.event in ("opened", "updated") and len(e.affected_endpoints) == 3
                                    for e in events), 60, "an incident with the port's three ONUs")
            assert all(daemon.states[f"onu-a{o}"].state == State.DOWN for o in (1, 2, 3))
            rewrite_in_place(served, snmprec_text(ports_recording(FIBRE)))
            await until(lambda: any(e.event == "resolved" for e in events), 60, "resolved")
            assert daemon.states["olt-1:pon-0-0-1"].state == State.UP  # the OLT answered for it throughout
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 15)

    assert {e.incident for e in events} == {events[0].incident}, events  # one incident, nothing else
    opened = next(e for e in events if e.event == "opened")
    assert opened.root == "olt-1:pon-0-0-1" and opened.kind == kind
    resolved = next(e for e in events if e.event == "resolved")
    assert set(resolved.affected_endpoints) == {"onu-a1", "onu-a2", "onu-a3"}
