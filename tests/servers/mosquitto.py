"""Debian's mosquitto on free loopback ports, in a temp dir, for tests.

Two listeners (``servers.md``): anonymous on ``port``, and ``auth_port`` with a password file made
by ``mosquitto_passwd``. With ``tls=True`` a third, ``tls_port``: TLS with a server certificate for
127.0.0.1 from a throw-away CA (``self.ca.cert`` is what clients trust) plus the same password file.
``users`` (name -> password) are added to the password file and ``acl`` (an ACL file's text, e.g.
``monitor pollers acl``) confines them on ``auth_port``.
Persistence is on (in the temp dir) so retained status topics survive the broker restart the
fault-injection test performs. Restartable on the same ports.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Mapping
from pathlib import Path

from tests.servers.certs import TestCA
from tests.servers.common import free_port, require_binary
from tests.servers.restartable import RestartableServer

USER, PASSWORD = "monitor", "mqtt-pass-9"


class Mosquitto(RestartableServer):
    def __init__(self, root: Path, *, tls: bool = False, users: Mapping[str, str] | None = None,
                 acl: str | None = None, host: str = "127.0.0.1") -> None:
        binary = require_binary("mosquitto")
        self.root = root
        self.host = host  # the listeners' address: loopback, or a lab's address its namespaces reach
        self.port = free_port()
        self.auth_port = free_port()
        while self.auth_port == self.port:  # the kernel may hand out a just-closed port again
            self.auth_port = free_port()
        pw = root / "mosquitto.passwd"
        subprocess.run([require_binary("mosquitto_passwd"), "-c", "-b", str(pw), USER, PASSWORD], check=True,
                       capture_output=True)
        for name, password in (users or {}).items():
            subprocess.run([require_binary("mosquitto_passwd"), "-b", str(pw), name, password], check=True,
                           capture_output=True)
        acl_line = ""
        if acl is not None:
            (root / "mosquitto.acl").write_text(acl)
            acl_line = f"acl_file {root / 'mosquitto.acl'}\n"
        self.config = root / "mosquitto.conf"
        text = (
            "per_listener_settings true\n"
            "user root\n"
            "persistence true\n"
            f"persistence_location {root}/\n"
            "log_dest stdout\n"
            f"listener {self.port} {host}\n"
            "allow_anonymous true\n"
            f"listener {self.auth_port} {host}\n"
            "allow_anonymous false\n"
            f"password_file {pw}\n"
            + acl_line
        )
        self.ca: TestCA | None = None
        self.tls_port = 0
        if tls:
            self.ca = TestCA(root, "mqtt-ca")
            server = self.ca.issue("mosquitto")
            while self.tls_port in (0, self.port, self.auth_port):
                self.tls_port = free_port()
            text += (
                f"listener {self.tls_port} {host}\n"
                f"cafile {self.ca.cert}\n"
                f"certfile {server.cert}\n"
                f"keyfile {server.key}\n"
                "allow_anonymous false\n"
                f"password_file {pw}\n"
            )
        self.config.write_text(text)
        self.name = "mosquitto"
        self.argv = [binary, "-c", str(self.config)]

    def ready(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1):
            pass
        if self.ca is not None:
            ctx = ssl.create_default_context(cafile=str(self.ca.cert))
            with socket.create_connection((self.host, self.tls_port), timeout=1) as s, \
                    ctx.wrap_socket(s, server_hostname="127.0.0.1"):
                pass
        with socket.create_connection((self.host, self.auth_port), timeout=1):
            return True
