"""bench.snmp.firstpass, the whole-process side of ``bench.snmp.run --whole-process`` (issue 12).

A fresh interpreter given the master keys (as ``snmpget -3m/-3M`` is) must poll every agent: a
ratio from a child that failed its GETs, or polled nothing, would be meaningless.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.snmp.firstpass import addresses
from monitor.probes.snmp_usm import make_user
from tests.servers.common import free_port
from tests.servers.snmpd import COMMUNITY, V3_AUTH, V3_PRIV, V3_USER, snmpd

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("version", ["2c", "3"])
def test_a_whole_process_first_pass_answers_every_agent_with_the_master_keys(tmp_path: Path, version: str) -> None:
    port = free_port(socket.SOCK_DGRAM)
    user = make_user(V3_USER, "SHA", V3_AUTH, "AES", V3_PRIV)
    cred = [COMMUNITY] if version == "2c" else [V3_USER, bytes(user.auth_master).hex(), bytes(user.priv_master).hex()]
    with snmpd(tmp_path / "agent", port, addresses(3)):
        out = subprocess.run([sys.executable, "-m", "bench.snmp.firstpass", version, str(port), "3", "2", *cred],
                             cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    ok, failed, seconds = out.stdout.split()
    assert (int(ok), int(failed)) == (3, 0)
    assert float(seconds) > 0


def test_wrong_master_keys_fail_every_get(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    with snmpd(tmp_path / "agent", port, addresses(2)):
        out = subprocess.run([sys.executable, "-m", "bench.snmp.firstpass", "3", str(port), "2", "2", V3_USER,
                              "00" * 20, "00" * 20], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split()[:2] == ["0", "2"]
