"""snmpsim serving the real device recordings of ``../shared/snmprec`` on a free loopback port.

v2c: community = recording name without ``.snmprec``; v3 (authPriv SHA/AES, user ``noc``):
context name = recording name. Runs in its own temp dir (data links, cache) and is stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers.common import SNMPREC_DIR, Process, require_binary, running

V3_USER, V3_AUTH, V3_PRIV = "noc", "authpass123", "privpass123"


@dataclass
class Snmpsim:
    process: Process
    port: int
    recordings: list[str]


def _answers(port: int, community: str) -> bool:
    out = subprocess.run(
        ["snmpget", "-v2c", "-c", community, "-t", "0.5", "-r", "0", "-On", f"127.0.0.1:{port}", ".1.3.6.1.2.1.1.3.0"],
        capture_output=True, timeout=5,
    )
    return out.returncode == 0


def recording_path(name: str) -> Path:
    """A shared recording by name (``edgeosolt``), or a path to a ``.snmprec`` file (test fixtures)."""
    return Path(name) if name.endswith(".snmprec") else SNMPREC_DIR / f"{name}.snmprec"


@contextmanager
def snmpsim(tmp: Path, port: int, recordings: Sequence[str]) -> Iterator[Snmpsim]:
    require_binary("snmpget")
    responder = Path(sys.executable).parent / "snmpsim-command-responder"
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name in recordings:
        src = recording_path(name)
        if not src.exists():
            raise FileNotFoundError(f"recording {src} is missing")
        # a copy, not a symlink: snmpsim derives the community from the link *target's* path depth
        shutil.copyfile(src, data / src.name)
    (tmp / "cache").mkdir(exist_ok=True)
    env = dict(os.environ, SNMPSIM_ALLOW_ROOT="true")
    proc = Process(
        [str(responder), f"--data-dir={data}", f"--cache-dir={tmp / 'cache'}",
         f"--agent-udpv4-endpoint=127.0.0.1:{port}", "--log-level=error",
         f"--v3-user={V3_USER}", f"--v3-auth-key={V3_AUTH}", "--v3-auth-proto=SHA",
         f"--v3-priv-key={V3_PRIV}", "--v3-priv-proto=AES"],
        tmp / "snmpsim.log", env,
    )
    with running(proc, lambda: _answers(port, recording_path(recordings[0]).stem), "snmpsim", timeout=60):
        yield Snmpsim(proc, port, list(recordings))
