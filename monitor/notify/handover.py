"""HTTP's point of no return for the apprise channel: a request's last byte, sent and recorded in one step.

SMTP has one (the final ``.``); HTTP has one too: a server acts on a request once it has the
whole of it, and not before — it cannot parse the headers' blank line, or the body's last
``Content-Length`` byte, or the last chunk, without that byte. So while Apprise's plugin sends a
request in its thread, every byte but the last goes out as usual; the last one is handed to the
event loop, which sends it without blocking and, when the kernel took it, records the row as
*handed over* (the outbox's ``handed_over()``) in the same step of the loop, before anything else
runs — the worker's SIGKILL-prone commits run on that loop too, so nothing can come between the
two. Only then does the thread read the answer. A process killed before that step never sent the
last byte: the server (which needs it) discards the request, and the next start sends it again;
killed after it, the kernel still delivers the byte and the next start counts the row as
delivered. What remains is a kill during that one commit, as with SMTP.

If the kernel cannot take the byte at once (the server stopped reading) or the loop does not
answer in time, the thread sends it itself without a record: at least once, never lost. A send
that was abandoned (the worker cancelled at shutdown) never sends its last byte.

The seam is urllib3's connection (what ``requests``, and so Apprise's HTTP plugins, send through):
``request`` and ``send`` are wrapped once, and do nothing different unless the apprise sender armed
the current send (a context variable, which Apprise's executor carries into its thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextvars
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

import urllib3.connection

from monitor.logs import event

log = logging.getLogger("monitor.delivery")


class Handover:
    """One send's point of no return: made, armed and disarmed on the event loop by the apprise
    sender; :meth:`finish` is called from the plugin's thread with the request's last byte."""

    def __init__(self, loop: asyncio.AbstractEventLoop, record: Callable[[], None], wait: float) -> None:
        self.loop = loop
        self.record = record
        self.wait = wait  # how long the thread waits for the loop before it sends the byte itself
        self.active = True
        self.handed = 0  # requests whose last byte the loop sent and recorded

    def finish(self, conn: urllib3.connection.HTTPConnection, byte: bytes) -> None:
        """In the plugin's thread: have the loop send ``byte`` and record the hand-over."""
        done: cf.Future[bool] = cf.Future()
        if _running_loop() is self.loop:  # a plugin that sends on the loop itself: no hop
            self._final(conn, byte, done)
            if not done.result():
                _SEND(conn, byte)
            return
        try:
            self.loop.call_soon_threadsafe(self._final, conn, byte, done)
        except RuntimeError as exc:  # the loop is closed: the daemon stopped, this send is abandoned
            raise ConnectionAbortedError(errno.ECONNABORTED, "abandoned before its last byte") from exc
        try:
            sent = done.result(self.wait)
        except cf.TimeoutError:
            # the loop is held up: send it here, unrecorded (at least once); unless it is on it now
            sent = False if done.cancel() else done.result()
        if not sent:
            _SEND(conn, byte)

    def _final(self, conn: urllib3.connection.HTTPConnection, byte: bytes, done: cf.Future[bool]) -> None:
        """On the loop: the last byte and the record, one step."""
        if not done.set_running_or_notify_cancel():
            return
        try:
            if not self.active:
                raise ConnectionAbortedError(errno.ECONNABORTED, "abandoned before its last byte")
            sent = _send_now(conn.sock, byte)
        except OSError as exc:
            done.set_exception(exc)
            return
        if sent:
            self.handed += 1
            try:
                self.record()
            except Exception as exc:  # the byte is out: the row stays "sending" (repeated after a crash)
                event(log, logging.ERROR, "cannot record a hand-over", channel="apprise", error=str(exc)[:200])
        done.set_result(sent)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _send_now(sock: Any, byte: bytes) -> bool:
    """Send without blocking; True if the kernel took it all (a TLS record: written whole)."""
    if not isinstance(sock, socket.socket):
        return False
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        return sock.send(byte) == len(byte)
    except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return False
    finally:
        sock.settimeout(timeout)


ARMED: contextvars.ContextVar[Handover | None] = contextvars.ContextVar("monitor_handover", default=None)


class _Hold:
    """The byte held back from the wire while a request is written."""

    __slots__ = ("byte", "opaque")

    def __init__(self) -> None:
        self.byte = b""
        self.opaque = False  # a body that is not bytes (a file, an iterator) went out as it is


_REQUEST = urllib3.connection.HTTPConnection.request
_SEND = urllib3.connection.HTTPConnection.send


def _request(self: urllib3.connection.HTTPConnection, method: str, url: str, body: Any = None,
             headers: Any = None, **kw: Any) -> None:
    handover = ARMED.get()
    if handover is None:
        return _REQUEST(self, method, url, body, headers, **kw)
    if self.sock is None:  # connect (and any proxy tunnel, which writes a request of its own) unheld
        self.connect()
    hold = _Hold()
    self._monitor_hold = hold  # type: ignore[attr-defined]
    try:
        _REQUEST(self, method, url, body, headers, **kw)
    finally:
        del self._monitor_hold  # type: ignore[attr-defined]
    # reached only when every write succeeded (urllib3 goes on to read an answer after a broken
    # pipe, so its own getresponse() is no sign that the request went out whole)
    if hold.byte and not hold.opaque:
        handover.finish(self, hold.byte)
    elif hold.byte:
        _SEND(self, hold.byte)
    return None


def _send(self: urllib3.connection.HTTPConnection, data: Any) -> None:
    hold: _Hold | None = getattr(self, "_monitor_hold", None)
    if hold is None:
        return _SEND(self, data)
    if hold.opaque or not isinstance(data, bytes | bytearray):
        if hold.byte:  # in order
            _SEND(self, hold.byte)
            hold.byte = b""
        hold.opaque = True
        return _SEND(self, data)
    if not data:
        return None
    out, hold.byte = hold.byte + bytes(data[:-1]), bytes(data[-1:])
    if out:
        _SEND(self, out)
    return None


def install() -> None:
    """Wrap urllib3's connection once (idempotent); unarmed requests go through unchanged."""
    cls = urllib3.connection.HTTPConnection
    if cls.request is not _request:
        cls.request = _request  # type: ignore[method-assign]
        cls.send = _send  # type: ignore[method-assign,assignment]
