"""Debian's PostgreSQL 15 on a free loopback port, in a throwaway cluster, for tests (issue 13).

``initdb`` into a fresh directory, ``postgres`` on 127.0.0.1 with password authentication for one
role, stopped by the PID we started; no system service, nothing left behind. PostgreSQL refuses to
run as root, so the cluster belongs to the ``postgres`` system user (created by the Debian package)
and lives in a directory under /tmp that user can reach: pytest's ``tmp_path`` sits below a mode-0700
folder of root's. Restartable on the same directory and port (a database outage mid-test).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.servers.common import free_port
from tests.servers.restartable import RestartableServer

VERSION = "15"
BIN = Path(f"/usr/lib/postgresql/{VERSION}/bin")


def _binary(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run the README's test command, which installs postgresql-{VERSION}")
    return str(path)


class PostgreSQL(RestartableServer):
    """One ``postgres`` we started, with database ``monitor`` owned by role ``monitor``.

    ``dsn`` is a libpq URL with the password in it (tests only); ``psql(sql)`` runs SQL as that role.
    """

    def __init__(self, user: str = "monitor", password: str = "monitor-test-password", *, host: str = "127.0.0.1",
                 root: Path | None = None, clients: str = "") -> None:
        """``host``: the address it listens on (and clients use); ``root``: a new folder for the cluster
        (default: a fresh one under /tmp); ``clients``: a network (CIDR) allowed to log in besides loopback."""
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(f"no postgres system user: run the README's test command (postgresql-{VERSION})")
        self.uid, self.gid = owner.pw_uid, owner.pw_gid
        self.user, self.password = user, password
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="monitor-pg-"))
        else:
            root.mkdir()
        self.root, self.host = root, host
        self.root.chmod(0o755)
        os.chown(self.root, self.uid, self.gid)
        self.data = self.root / "data"
        self.port = free_port()
        self.name = "postgres"
        self.dsn = f"postgresql://{user}:{password}@{host}:{self.port}/monitor"
        pwfile = self.root / "pw"
        pwfile.write_text(password + "\n")
        os.chown(pwfile, self.uid, self.gid)
        pwfile.chmod(0o600)
        self._as_postgres([_binary("initdb"), "-D", str(self.data), "-U", user, f"--pwfile={pwfile}",
                           "-A", "scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync"])
        pwfile.unlink()
        if clients:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {clients} scram-sha-256\n")
        self.argv = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
                     _binary("postgres"), "-D", str(self.data), "-h", host, "-p", str(self.port),
                     "-k", str(self.root), "-c", "fsync=off", "-c", "full_page_writes=off",
                     "-c", "synchronous_commit=off", "-c", "logging_collector=off"]
        self._created = False

    def _as_postgres(self, argv: list[str]) -> str:
        proc = subprocess.run(["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", *argv],
                              capture_output=True, text=True, timeout=120, check=False, cwd=self.root)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        return proc.stdout

    def psql(self, sql: str, database: str = "monitor") -> str:
        """Run ``sql`` over TCP as the test role; the unaligned, tuples-only output."""
        env = {"PGPASSWORD": self.password, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        proc = subprocess.run([_binary("psql"), "-h", self.host, "-p", str(self.port), "-U", self.user,
                               "-d", database, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                              capture_output=True, text=True, timeout=60, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"psql failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def ready(self) -> bool:
        proc = subprocess.run([_binary("pg_isready"), "-h", self.host, "-p", str(self.port), "-q"],
                              capture_output=True, timeout=10, check=False)
        return proc.returncode == 0

    def start(self, timeout: float = 30.0) -> None:
        super().start(timeout)
        if not self._created:
            self.psql(f"CREATE DATABASE monitor OWNER {self.user}", database="postgres")
            self._created = True

    def stop_fast(self) -> None:
        """``pg_ctl stop -m fast``: SIGINT to the postmaster we started, which ends every session at once
        (SIGTERM waits for clients to leave, which a daemon never does), and wait until it has exited."""
        process = self.process
        if process is None or not process.alive():
            return
        os.kill(process.pid, signal.SIGINT)
        try:
            assert process.proc is not None
            process.proc.wait(60)
        except subprocess.TimeoutExpired:
            process.stop(signal.SIGKILL)

    def remove(self) -> None:
        """Stop and delete the cluster."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
