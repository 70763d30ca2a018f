"""JSON over HTTP with an HMAC signature: the SMS/WhatsApp gateway channel and the webhook desk.

Every request carries ``X-Monitor-Timestamp`` (send time, seconds), ``X-Monitor-Signature:
sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the shared secret>`` so the receiver can check
origin and freshness, and ``Idempotency-Key`` (the outbox key) so a repeat after a crash is
recognisable. 2xx is delivered; 408, 429 and 5xx are retried; other 4xx are permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import aiohttp

from monitor.delivery.config import WebhookSettings
from monitor.delivery.outbox import HandedOver, Row
from monitor.delivery.retry import DeliveryPermanent, DeliveryRetryable

SIGNATURE = "X-Monitor-Signature"
TIMESTAMP = "X-Monitor-Timestamp"
MAX_ANSWER = 64 * 1024  # bytes of a receiver's answer body we read (only its status matters)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """For receivers (and our tests): constant-time check of a signature header."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookPoster:
    def __init__(self, settings: WebhookSettings) -> None:
        self.s = settings
        self._session: aiohttp.ClientSession | None = None

    async def post(self, doc: dict[str, Any], key: str) -> int:
        body = json.dumps(doc, ensure_ascii=False, sort_keys=True).encode()
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", "Idempotency-Key": key, TIMESTAMP: ts}
        if self.s.secret is not None:
            headers[SIGNATURE] = sign(self.s.secret.reveal().encode(), ts, body)
        if self.s.token is not None:
            headers["Authorization"] = f"Bearer {self.s.token.reveal()}"
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.s.timeout))
        try:
            async with self._session.post(self.s.url, data=body, headers=headers) as resp:
                status = resp.status
                # the status is the answer; a body that never ends must neither fill memory nor turn
                # an accepted notice into a timeout (then a retry: sent twice). Unread rest: closed.
                await resp.content.read(MAX_ANSWER)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise DeliveryRetryable(f"webhook unreachable: {type(exc).__name__}", "unreachable") from exc
        if status in (408, 429) or status >= 500:
            raise DeliveryRetryable(f"webhook answered {status}", f"http_{status}")
        if status >= 400:
            raise DeliveryPermanent(f"webhook answered {status}", f"http_{status}")
        return status

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class WebhookSender:
    """The ``webhook`` channel: customer notices for an SMS/WhatsApp gateway."""

    channel = "webhook"

    def __init__(self, poster: WebhookPoster) -> None:
        self.poster = poster

    async def send(self, row: Row, handed_over: HandedOver | None = None) -> str | None:
        p = row.payload
        doc = {"key": row.key, "incident": row.incident, "event": row.action, "to": p["to"], "text": p["body"],
               "language": p.get("language", "")}
        return str(await self.poster.post(doc, row.key))

    async def close(self) -> None:
        await self.poster.close()
