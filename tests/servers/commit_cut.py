"""A loopback proxy to PostgreSQL that loses a COMMIT's answer on demand (issue 13).

The one moment a client cannot tell what happened to its transaction: COMMIT reached the server,
which committed, and the connection died before the answer came back. ``lose_reply()`` arms the proxy
for the next message that carries a COMMIT: it is passed to the server, the server's whole answer (up
to its ReadyForQuery) is read and thrown away, and both connections are closed, so the client sees
the server hang up mid-COMMIT although its transaction is committed. ``lose_commit()`` is the other
case the client cannot tell from it: the connection dies with the COMMIT, which never reaches the server.
``stall_commit()`` hangs up on the client only and keeps the server's side open and silent, so the
server still runs the transaction, waiting for its COMMIT.
"""

from __future__ import annotations

import contextlib
import select
import socket

from tests.servers.tcp_proxy import TcpProxy

#: ReadyForQuery: the end of the server's answer to a query ('Z', length 5, one status byte)
_READY = b"Z\x00\x00\x00\x05"


class CommitCut(TcpProxy):
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self._mode: str | None = None  # "reply", "commit" or "stall": what the next COMMIT loses
        self.refusing = False  # new connections are hung up on at once (the server unreachable)
        self.cuts = 0  # COMMITs cut so far
        self.every = 0  # > 0: the answer to every so many COMMITs is lost (lose_every)
        self._commits = 0
        super().__init__(target_port, host)

    def url(self, url: str) -> str:
        """``url`` (a store's, to the server) through this proxy."""
        return url.replace(f":{self.target_port}/", f":{self.port}/")

    def lose_reply(self) -> None:
        """The next COMMIT is committed by the server and its answer lost with the connection."""
        self._mode = "reply"

    def lose_commit(self) -> None:
        """The next COMMIT is lost with the connection before the server has it (nothing committed)."""
        self._mode = "commit"

    def lose_every(self, every: int) -> None:
        """From now on the answer to every ``every``-th COMMIT is lost, as :meth:`lose_reply` (0: none)."""
        self._commits = 0
        self.every = every

    def stall_commit(self) -> None:
        """The next COMMIT is lost with the client's connection; the server's stays open, its session in
        the transaction (until the test ends or the session is ended)."""
        self._mode = "stall"

    def _cut(self, data: bytes) -> str | None:
        """What to lose of a message from the client: None if it carries no COMMIT or none is to be lost."""
        if b"COMMIT" not in data:
            return None
        with self._lock:  # (one pump thread per connection)
            if self.every:
                self._commits += 1
                if self._commits % self.every == 0 and self._mode is None:
                    self._mode = "reply"
            mode, self._mode = self._mode, None
            if mode is not None:
                self.cuts += 1
            return mode

    def _connect(self, client: socket.socket) -> None:
        if self.refusing:
            client.close()
            return
        try:
            server = socket.create_connection((self.host, self.target_port), timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        with self._lock:
            self._sockets += [client, server]
        self._pump(client, server)

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        """Both directions on one thread, so that a COMMIT and its answer are handled in order."""
        swallow: bytes | None = None  # while the server's answer to a COMMIT is being thrown away
        ends = [client, server]  # closed when this pump stops
        try:
            while not self._closed.is_set():
                ready, _, _ = select.select([client, server], [], [], 0.1)
                if server in ready:
                    data = server.recv(65536)
                    if not data:
                        return
                    if swallow is not None:
                        swallow += data
                        if _READY in swallow:  # the whole answer: committed, and nobody heard it
                            return
                        continue
                    client.sendall(data)
                if client in ready:
                    data = client.recv(65536)
                    if not data:
                        return
                    mode = self._cut(data)
                    if mode is not None:
                        if mode == "stall":
                            ends = [client]
                        if mode in ("commit", "stall"):
                            return
                        swallow = b""
                    server.sendall(data)
        except OSError:
            pass
        finally:
            for s in ends:
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    s.close()
