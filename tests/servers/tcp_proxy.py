"""A loopback TCP proxy a test can cut: one daemon's path to a server, partitioned on demand.

``cut()`` stops the proxy forwarding in both directions without closing anything: the client's
statements are taken by the kernel and never answered, its new connections are accepted and never
served, as when the path to the server fails somewhere between the machines (no reset, no error:
only silence). ``heal()`` lets what waited through. Each connection is two pump threads; the
listening socket and every connection close with :meth:`close`.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

from tests.servers.common import free_port


class TcpProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host, self.target_port = host, target_port
        self.port = free_port()
        self._open = threading.Event()  # set: forwarding; clear: cut
        self._open.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((host, self.port))
        self._listener.settimeout(0.2)
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def cut(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._wait_open()
        try:
            server = socket.create_connection((self.host, self.target_port), timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets += [client, server]
        for a, b in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _wait_open(self) -> None:
        while not self._open.wait(0.1):
            if self._closed.is_set():
                return

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                self._wait_open()
                ready, _, _ = select.select([src], [], [], 0.1)
                if not ready or not self._open.is_set():
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except (OSError, ValueError):  # (ValueError: closed by close() while selecting)
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()
