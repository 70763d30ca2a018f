"""Mail through aiosmtplib: a small pool of persistent connections, STARTTLS or implicit TLS, auth.

Exactly once across a SIGKILL: the transaction is driven step by step (MAIL, RCPT, DATA, the body
and the final ``.``) and the outbox records the hand-over (``handed_over``) right after the final
``.`` reached the kernel, in the same step of the event loop. A process killed before that write
never completed the transaction and the server discards it (RFC 5321 §4.1.1.4 and every MTA), so
the next start sends the message again; killed after the commit, the kernel still delivers the
``.`` and the server accepts the whole message although nobody reads its answer, so the next start
counts it as delivered. Every message's ``Message-ID`` derives from its outbox key and its
``Date`` from the time it was queued, so what is left — a kill during that one commit, or the
connection (not the process) lost between the ``.`` and the reply, where the row is retried —
repeats the same message, which receivers drop as a duplicate. SMTP 4xx replies and lost
connections are retried; 5xx replies to a recipient or the data are permanent.
"""

from __future__ import annotations

import asyncio
import hashlib
import quopri
import re
import ssl
from email.header import Header
from email.message import EmailMessage
from email.utils import formataddr, formatdate, parseaddr

import aiosmtplib

from monitor.delivery.config import SmtpSettings
from monitor.delivery.outbox import HandedOver, Row
from monitor.delivery.retry import DeliveryPermanent, DeliveryRetryable
from monitor.ha.gate import GATE, LeaseLapsed

_LINE_END = re.compile(rb"\r\n|\r|\n")
_DOT_LINE = re.compile(rb"^\.", re.MULTILINE)
_BREAKS = re.compile(r"[\r\n]+")


#: outbox actions whose mail goes to customers (outage and maintenance notices)
CUSTOMER_ACTIONS = ("customer_", "maintenance_")


def message_id(key: str, sender: str) -> str:
    """Stable ``<hash@domain>`` for one outbox key."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def headers(row: Row, sender: str) -> list[tuple[str, str]]:
    """The message's headers in order, unencoded: one definition for the wire and the Maildir."""
    p = row.payload
    out = [("From", sender), ("To", p["to"]), ("Subject", p["subject"]),
           ("Date", formatdate(row.created_at, localtime=False)), ("Message-ID", message_id(row.key, sender)),
           ("X-Monitor-Incident", row.incident)]
    if p.get("thread"):  # email-to-ticket follow-ups thread into the ticket the first mail opened
        ref = message_id(p["thread"], sender)
        if ref != out[4][1]:
            out += [("In-Reply-To", ref), ("References", ref)]
    if row.action.startswith(CUSTOMER_ACTIONS):
        # RFC 3834: customers' vacation responders and mail filters must not answer a notice
        out.append(("Auto-Submitted", "auto-generated"))
        if p.get("unsubscribe"):  # RFC 2369; with RFC 8058 a POST to the https: URL opts out at once
            out.append(("List-Unsubscribe", f"<{p['unsubscribe']}>"))
            if p.get("unsubscribe_post"):
                out.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    # a line break in a value (a template, a customer's name from billing) would start a header of its own
    return [(name, _BREAKS.sub(" ", value)) for name, value in out]


def wire(row: Row, sender: str, *, eight_bit: bool, utf8: bool = False) -> bytes:
    """The DATA of one notice as it goes on the wire: CRLF line ends, dot-stuffed, ending in CRLF,
    without the final ``.``.

    Written out directly rather than through :class:`EmailMessage`: the email package's header
    registry and content manager cost ~1.5 ms of CPU per message on the daemon's event loop — the
    one that also times the pings — which is most of a 10,000-notice fan-out (see
    docs/benchmarks.md). :func:`build` is the reference it is tested against.
    """
    lines = []
    for name, value in headers(row, sender):
        if name in ("From", "To"):
            value = _address(value, utf8)
        elif not value.isascii():
            value = value if utf8 else Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
        lines.append(f"{name}: {value}")
    p = row.payload
    body = p["body"] if p["body"].endswith("\n") else p["body"] + "\n"
    raw = body.encode()
    if body.isascii() and max(map(len, body.splitlines() or [""])) <= 998:
        cte = "7bit"
    elif eight_bit and max(map(len, raw.splitlines() or [b""])) <= 998:
        cte = "8bit"
    else:
        cte, raw = "quoted-printable", quopri.encodestring(raw)
    lines += ["MIME-Version: 1.0", 'Content-Type: text/plain; charset="utf-8"', f"Content-Transfer-Encoding: {cte}"]
    if p.get("language"):
        lines.append(f"Content-Language: {p['language']}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    data = head + _DOT_LINE.sub(b"..", _LINE_END.sub(b"\r\n", raw))
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _address(value: str, utf8: bool) -> str:
    name, addr = parseaddr(value)
    if not name:
        return addr
    if name.isascii() or utf8:
        return formataddr((name, addr))
    return formataddr((name, addr), charset="utf-8")


def build(row: Row, sender: str) -> EmailMessage:
    """The same notice as an :class:`EmailMessage` (the Maildir sink; the reference for :func:`wire`)."""
    p = row.payload
    msg = EmailMessage()
    for name, value in headers(row, sender):
        msg[name] = value
    msg.set_content(p["body"])
    if p.get("language"):  # after set_content, which replaces the Content-* headers
        msg["Content-Language"] = p["language"]
    return msg


class EmailSender:
    channel = "email"

    def __init__(self, settings: SmtpSettings) -> None:
        self.s = settings
        self.pool: asyncio.LifoQueue[aiosmtplib.SMTP | None] = asyncio.LifoQueue()
        for _ in range(settings.pool_size):
            self.pool.put_nowait(None)

    def _tls(self) -> ssl.SSLContext | None:
        if self.s.security == "none":
            return None
        ctx = ssl.create_default_context(cafile=self.s.ca_file or None)
        if not self.s.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.s
        smtp = aiosmtplib.SMTP(
            hostname=s.host, port=s.port, timeout=s.timeout, use_tls=s.security == "tls",
            start_tls=s.security == "starttls", tls_context=self._tls(),
        )
        try:
            await smtp.connect()
            if s.username:
                await smtp.login(s.username, s.password.reveal() if s.password is not None else "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise DeliveryRetryable(f"SMTP login refused ({exc.code})", "auth") from exc
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            raise DeliveryRetryable(f"cannot connect to SMTP {s.host}:{s.port}: {type(exc).__name__}",
                                    "unreachable") from exc
        return smtp

    async def send(self, row: Row, handed_over: HandedOver | None = None) -> str | None:
        conn = await self.pool.get()
        try:
            if conn is None or not conn.is_connected:
                conn = None
                conn = await self._connect()
            await transact(conn, row, self.s.sender, handed_over)
        except LeaseLapsed:  # (checked mid-transaction: the relay waits for more; never back in the pool)
            _drop(conn)
            conn = None
            raise
        except asyncio.CancelledError:
            # A stop or a stand-down mid-transaction (the relay may still be reading the message): back in
            # the pool, close() would send QUIT into it and wait for an answer that never comes
            _drop(conn)
            conn = None
            raise
        except aiosmtplib.SMTPRecipientRefused as exc:
            if 500 <= exc.code < 600:
                raise DeliveryPermanent(f"recipient refused ({exc.code})", f"smtp_{exc.code}") from exc
            raise DeliveryRetryable(f"recipient deferred ({exc.code})", f"smtp_{exc.code}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise DeliveryPermanent(f"SMTP refused the message ({exc.code})", f"smtp_{exc.code}") from exc
            _drop(conn)
            conn = None
            raise DeliveryRetryable(f"SMTP deferred the message ({exc.code})", f"smtp_{exc.code}") from exc
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            _drop(conn)
            conn = None
            raise DeliveryRetryable(f"SMTP connection lost: {type(exc).__name__}", "unreachable") from exc
        finally:
            self.pool.put_nowait(conn)
        return message_id(row.key, self.s.sender)

    async def close(self) -> None:
        while not self.pool.empty():
            conn = self.pool.get_nowait()
            if conn is not None and conn.is_connected:
                try:
                    await conn.quit()
                except (TimeoutError, aiosmtplib.SMTPException, OSError):
                    conn.close()


async def transact(conn: aiosmtplib.SMTP, row: Row, sender_header: str, handed_over: HandedOver | None) -> None:
    """One mail transaction whose point of no return is recorded the moment it is passed.

    aiosmtplib's ``send_message`` writes the body with its terminator and awaits the reply; here the
    body and the final ``.`` are written, and if the transport handed them all to the kernel (which
    still transmits them if this process is killed), ``handed_over()`` commits before anything else
    runs; only then is the reply awaited. Killed before the write: the server never saw the end of
    the data and discards the transaction; killed after the commit: the server has the whole
    message. What is left is a kill during the commit itself (a repeat with the same Message-ID).
    """
    sender, to = parseaddr(sender_header)[1], parseaddr(row.payload["to"])[1]
    utf8 = not (sender.isascii() and to.isascii())  # e.g. josé@… : needs the server's SMTPUTF8
    if utf8 and not conn.supports_extension("smtputf8"):
        raise DeliveryPermanent("the relay does not support SMTPUTF8, needed for a non-ASCII address", "smtputf8")
    eight_bit = conn.supports_extension("8bitmime")
    data = wire(row, sender_header, eight_bit=eight_bit, utf8=utf8)
    options = (["BODY=8BITMIME"] if eight_bit else []) + (["SMTPUTF8"] if utf8 else [])
    if conn.supports_extension("size"):
        options.append(f"SIZE={len(data) + 3}")
    GATE.check("SMTP MAIL")  # (after the connection's awaits)
    try:
        await conn.mail(sender, options=options, encoding="utf-8" if utf8 else "ascii")
        await conn.rcpt(to, encoding="utf-8" if utf8 else "ascii")
        start = await conn.execute_command(b"DATA")
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol = conn.protocol
        if protocol is None or protocol.transport is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost before the message")
        GATE.check("SMTP final dot")  # the point of no return, after three round trips that may have frozen
        protocol.write(data + b".\r\n")
        if handed_over is not None and _all_in_kernel(protocol.transport):
            handed_over()
        try:
            done = await protocol.read_response(timeout=conn.timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            conn.close()  # a reply given up on would be paired with the next command
            raise
        if done.code != 250:
            raise aiosmtplib.SMTPDataError(done.code, done.message)
    except aiosmtplib.SMTPResponseException:
        if conn.is_connected:  # leave a clean envelope for the next message on this connection
            try:
                await conn.rset()
            except (aiosmtplib.SMTPException, OSError):
                conn.close()
        raise


def _all_in_kernel(transport: object) -> bool:
    """True when nothing written is still buffered in this process (so a kill cannot lose it).

    Under TLS the TLS transport's own count leaves out the TCP transport below it, which is read
    through asyncio's private ``_ssl_protocol._transport``; where that is not there (another event
    loop), the answer is False: the row then stays "sending", which can repeat but never lose.
    """
    if not isinstance(transport, asyncio.WriteTransport) or transport.get_write_buffer_size():
        return False
    if transport.get_extra_info("sslcontext") is None:
        return True
    inner = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
    return isinstance(inner, asyncio.WriteTransport) and inner.get_write_buffer_size() == 0


def _drop(conn: aiosmtplib.SMTP | None) -> None:
    if conn is not None:
        conn.close()
    return None
