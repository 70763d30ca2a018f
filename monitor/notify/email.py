"""Mail through aiosmtplib: a small pool of persistent connections, STARTTLS or implicit TLS, auth.

Every message's ``Message-ID`` is derived from its outbox key and its ``Date`` from the time it was
queued, so a message repeated after a crash (sent, then killed before it was recorded) is the same
message to the receiving side, which drops it as a duplicate. SMTP 4xx replies and lost connections
are retried; 5xx replies to a recipient or the data are permanent for that item.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

import aiosmtplib

from monitor.delivery.config import SmtpSettings
from monitor.delivery.outbox import Row
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

    async def send(self, row: Row) -> str | None:
        msg = build(row, self.s.sender)
        conn = await self.pool.get()
        try:
            if conn is None or not conn.is_connected:
                conn = None
                conn = await self._connect()
            await conn.send_message(msg)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [e.code for e in exc.recipients]
            if all(500 <= c < 600 for c in codes):
                raise DeliveryPermanent(f"recipient refused ({codes[0]})", f"smtp_{codes[0]}") from exc
            raise DeliveryRetryable(f"recipient deferred ({codes[0]})", f"smtp_{codes[0]}") from exc
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


def _drop(conn: aiosmtplib.SMTP | None) -> None:
    if conn is not None:
        conn.close()
    return None
