"""A real SMTP server for tests and the notification benchmark: aiosmtpd in its own process.

Each accepted message is written to a Maildir (``<root>/maildir/new``), so tests read exactly what
crossed the wire. Optional AUTH (PLAIN/LOGIN, one user) and TLS (STARTTLS or implicit) with a
certificate for 127.0.0.1 from a throw-away CA (``tests.servers.certs``; ``cert`` is the CA file
clients trust). Restartable on the same port and maildir, for the
"relay down during the outage, then up" test.

Run directly: ``python -m tests.servers.smtp --port P --maildir DIR [--user U --password-file F]
[--cert C --key K] [--implicit-tls]``.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import mailbox
import smtplib
import socket
import ssl
import sys
from collections import Counter
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tests.servers.certs import TestCA
from tests.servers.common import free_port
from tests.servers.restartable import RestartableServer


class SmtpServer(RestartableServer):
    def __init__(self, root: Path, *, user: str = "", password: str = "", tls: str = "none",
                 host: str = "127.0.0.1") -> None:
        self.root, self.host = root, host
        self.port = free_port()
        self.maildir = root / "maildir"
        self.user, self.password, self.tls = user, password, tls
        self.name = "smtpd"
        self.argv = [sys.executable, "-m", "tests.servers.smtp", "--port", str(self.port), "--maildir",
                     str(self.maildir), "--host", host]
        if user:
            pw_file = root / "smtp-password"
            pw_file.write_text(password)
            self.argv += ["--user", user, "--password-file", str(pw_file)]
        if tls != "none":
            ca = TestCA(root, "smtp-ca")
            self.cert = ca.cert  # what clients put in ca_file
            server = ca.issue("smtp")
            self.argv += ["--cert", str(server.cert), "--key", str(server.key)]
            if tls == "implicit":
                self.argv.append("--implicit-tls")

    def ready(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1) as s:
            if self.tls == "implicit":
                ctx = ssl.create_default_context(cafile=str(self.cert))
                with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
                    return t.recv(3) == b"220"
            return s.recv(3) == b"220"

    def messages(self) -> list[EmailMessage]:
        """Every message received, in arrival order (Maildir file names start with the time)."""
        new = self.maildir / "new"
        if not new.exists():
            return []
        out = []
        for path in sorted(new.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name)):
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            out.append(msg)
        return out

    def count(self) -> int:
        new = self.maildir / "new"
        return sum(1 for _ in new.iterdir()) if new.exists() else 0

    def logical(self) -> dict[str, EmailMessage]:
        """What a receiver that drops repeated Message-IDs keeps: one message per Message-ID."""
        out: dict[str, EmailMessage] = {}
        for m in self.messages():
            out.setdefault(str(m["Message-ID"]), m)
        return out

    def repeats(self) -> Counter[str]:
        return Counter(str(m["Message-ID"]) for m in self.messages())

    def send_probe(self) -> None:  # pragma: no cover - manual debugging aid
        with smtplib.SMTP("127.0.0.1", self.port) as s:
            s.sendmail("a@b", ["c@d"], b"Subject: x\r\n\r\nx\r\n")


# ---------------------------------------------------------------------------------------------- process


class _Handler:
    """Accepts into the Maildir; refusals on cue, as real relays answer: a recipient ``nosuch…`` gets
    550 at RCPT, ``busy…`` 451 the first time, and a body containing ``REJECT-AT-DOT`` 554 after
    the final ``.`` (``STALL-AT-DOT``: no answer at all on that connection)."""

    def __init__(self, maildir: Path) -> None:
        self.box = mailbox.Maildir(str(maildir), create=True)
        self.deferred: set[str] = set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("nosuch"):
            return "550 5.1.1 no such mailbox"
        if address.startswith("busy") and address not in self.deferred:
            self.deferred.add(address)
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        if b"REJECT-AT-DOT" in content:
            return "554 5.6.0 message refused"
        if b"STALL-AT-DOT" in content:  # a relay that never answers the final dot (on this connection)
            await asyncio.Event().wait()
        self.box.add(content)
        return "250 OK"


def _main() -> None:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--maildir", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--user", default="")
    ap.add_argument("--password-file", default="")
    ap.add_argument("--cert", default="")
    ap.add_argument("--key", default="")
    ap.add_argument("--implicit-tls", action="store_true")
    args = ap.parse_args()
    handler = _Handler(Path(args.maildir))
    password = Path(args.password_file).read_text() if args.password_file else ""

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login.decode() == args.user and \
            data.password.decode() == password
        return AuthResult(success=ok, handled=False)

    ctx = None
    if args.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
    starttls = ctx if ctx is not None and not args.implicit_tls else None

    def factory() -> SMTP:
        return SMTP(handler, hostname="127.0.0.1", authenticator=authenticator if args.user else None,
                    auth_required=bool(args.user), auth_require_tls=False, tls_context=starttls,
                    require_starttls=starttls is not None, data_size_limit=10_000_000, enable_SMTPUTF8=True)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, args.host, args.port,
                                          ssl=ctx if args.implicit_tls else None)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    _main()
