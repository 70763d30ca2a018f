"""A service desk behind a webhook: every ticket operation is one signed JSON POST.

The ticket "id" is the incident's tag itself, so ``find`` needs no round trip and a receiver that
creates tickets keys them by ``ticket_incident`` (and drops repeats by ``Idempotency-Key``).
Comments, resolve and reopen carry ``ref`` (the note's :class:`~monitor.desk.base.Ref` marker, the
same one RT stores) and use it in the ``Idempotency-Key``: we cannot read the receiver back, so it
drops a note it already has.
"""

from __future__ import annotations

import hashlib

from monitor.delivery.config import WebhookSettings
from monitor.desk.base import Ref
from monitor.notify.webhook import WebhookPoster


class WebhookDesk:
    name = "webhook"

    def __init__(self, settings: WebhookSettings) -> None:
        self.poster = WebhookPoster(settings)

    async def _op(self, op: str, ticket: str, subject: str, body: str, ref: Ref | None = None) -> None:
        doc = {"op": op, "ticket": ticket, "subject": subject, "body": body}
        if ref is not None:
            doc["ref"] = ref.marker
            digest = ref.marker
        else:
            digest = hashlib.sha256(f"{op}\0{ticket}\0{subject}\0{body}".encode()).hexdigest()[:16]
        await self.poster.post(doc, f"{ticket}/{op}/{digest}")

    async def find(self, incident: str) -> str | None:
        return None  # the receiver deduplicates "open" by ticket id and Idempotency-Key

    async def find_all(self, incident: str) -> list[str]:
        return []  # (cannot be read back; the ticket id is the incident's, so there is never a second)

    async def merge(self, ticket: str, into: str) -> None:
        return None  # (never asked: find_all finds nothing)

    async def open(self, incident: str, subject: str, body: str) -> str:
        await self._op("open", incident, subject, body)
        return incident

    async def update(self, ticket: str, subject: str) -> None:
        await self._op("update", ticket, subject, "")

    async def comment(self, ticket: str, body: str, ref: Ref | None = None) -> None:
        await self._op("comment", ticket, "", body, ref)

    async def resolve(self, ticket: str, body: str, ref: Ref | None = None) -> None:
        await self._op("resolve", ticket, "", body, ref)

    async def reopen(self, ticket: str, body: str, ref: Ref | None = None) -> None:
        await self._op("reopen", ticket, "", body, ref)

    async def taken(self, ticket: str) -> bool:
        return False

    async def close(self) -> None:
        await self.poster.close()
