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
import re
import ssl
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

import aiosmtplib
from aiosmtplib.email import flatten_message

from monitor.delivery.config import SmtpSettings
from monitor.delivery.outbox import HandedOver, Row
from monitor.delivery.retry import DeliveryPermanent, DeliveryRetryable


def message_id(key: str, sender: str) -> str:
    """Stable ``<hash@domain>`` for one outbox key."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def build(row: Row, sender: str) -> EmailMessage:
    p = row.payload
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = p["to"]
    msg["Subject"] = p["subject"]
    msg["Date"] = formatdate(row.created_at, localtime=False)
    msg["Message-ID"] = message_id(row.key, sender)
    msg["X-Monitor-Incident"] = row.incident
    if p.get("thread"):  # email-to-ticket follow-ups thread into the ticket the first mail opened
        ref = message_id(p["thread"], sender)
        if ref != msg["Message-ID"]:
            msg["In-Reply-To"] = ref
            msg["References"] = ref
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
        msg = build(row, self.s.sender)
        conn = await self.pool.get()
        try:
            if conn is None or not conn.is_connected:
                conn = None
                conn = await self._connect()
            await transact(conn, msg, handed_over)
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
        return str(msg["Message-ID"])

    async def close(self) -> None:
        while not self.pool.empty():
            conn = self.pool.get_nowait()
            if conn is not None and conn.is_connected:
                try:
                    await conn.quit()
                except (TimeoutError, aiosmtplib.SMTPException, OSError):
                    conn.close()


_LINE_END = re.compile(rb"\r\n|\r|\n")
_DOT_LINE = re.compile(rb"^\.", re.MULTILINE)


def wire(msg: EmailMessage, *, eight_bit: bool, utf8: bool = False) -> bytes:
    """The DATA body: CRLF line ends, dot-stuffed, ending in CRLF, without the final ``.``."""
    data = flatten_message(msg, utf8=utf8, cte_type="8bit" if eight_bit else "7bit")
    data = _DOT_LINE.sub(b"..", _LINE_END.sub(b"\r\n", data))
    return data if data.endswith(b"\r\n") else data + b"\r\n"


async def transact(conn: aiosmtplib.SMTP, msg: EmailMessage, handed_over: HandedOver | None) -> None:
    """One mail transaction whose point of no return is recorded the moment it is passed.

    aiosmtplib's ``send_message`` writes the body with its terminator and awaits the reply; here the
    body and the final ``.`` are written, and if the transport handed them all to the kernel (which
    still transmits them if this process is killed), ``handed_over()`` commits before anything else
    runs; only then is the reply awaited. Killed before the write: the server never saw the end of
    the data and discards the transaction; killed after the commit: the server has the whole
    message. What is left is a kill during the commit itself (a repeat with the same Message-ID).
    """
    sender, to = parseaddr(str(msg["From"]))[1], parseaddr(str(msg["To"]))[1]
    utf8 = not (sender.isascii() and to.isascii())  # e.g. josé@… : needs the server's SMTPUTF8
    if utf8 and not conn.supports_extension("smtputf8"):
        raise DeliveryPermanent("the relay does not support SMTPUTF8, needed for a non-ASCII address", "smtputf8")
    eight_bit = conn.supports_extension("8bitmime")
    data = wire(msg, eight_bit=eight_bit, utf8=utf8)
    options = (["BODY=8BITMIME"] if eight_bit else []) + (["SMTPUTF8"] if utf8 else [])
    if conn.supports_extension("size"):
        options.append(f"SIZE={len(data) + 3}")
    try:
        await conn.mail(sender, options=options, encoding="utf-8" if utf8 else "ascii")
        await conn.rcpt(to, encoding="utf-8" if utf8 else "ascii")
        start = await conn.execute_command(b"DATA")
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol = conn.protocol
        if protocol is None or protocol.transport is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost before the message")
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
