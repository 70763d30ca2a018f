"""One interface for every service desk, and the outbox channel that drives it.

Adapters (RT, webhook) implement :class:`Desk`: ``find`` (the ticket of an incident, by its tag),
``find_all`` (every ticket carrying the tag, oldest first), ``merge``, ``open``, ``update``,
``comment``, ``resolve``, ``reopen`` and ``taken`` (staff picked the ticket up: counts as an
acknowledgement). :class:`DeskSender` turns outbox rows into those calls and keeps the incident →
ticket map, always looking the ticket up before creating one, so a crash between "created" and
"recorded" never yields a second ticket.

A second ticket can still appear late: a deposed active daemon (frozen, cut off) whose create request
was already on its way when the standby took over, looked, found nothing and opened its own (issue
13, the HA lab's H5). Nothing on our side can call such a request back, so the desk is repaired
instead: the first time this process touches an incident's ticket (after a start or a takeover) and
before every resolve and reopen, :class:`DeskSender` asks for every ticket with the tag, keeps the
oldest (the one every process picks, whichever recorded what) and merges the others into it, so the
desk ends with one ticket holding the whole history. Comments (and the notes of resolve and
reopen) carry a :class:`Ref` derived from the row's key, so an adapter that can read its desk back
skips a comment the desk already has when the row is repeated after a crash. (Email-to-ticket needs
no adapter: its messages go out on the email channel with a stable subject tag.)
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Protocol

from monitor.delivery.outbox import HandedOver, Outbox, Row
from monitor.delivery.retry import DeliveryRetryable
from monitor.logs import event

log = logging.getLogger("monitor.delivery")


def tag(incident: str) -> str:
    """The subject tag every desk message carries: ``[INC-000123]``."""
    return f"[{incident}]"


@dataclass(frozen=True, slots=True)
class Ref:
    """Which side effect a desk note is, so a repeat after a crash is recognisable.

    ``marker`` is a short hash of the outbox key (stable across restarts, one per note) that the
    adapter stores with the note (``monitor-ref: <marker>``); ``repeat`` says the desk may already
    have it (the row was in flight when the last process died, or an earlier attempt failed after
    the desk may have accepted it). Only repeats pay for a look-up; first attempts post at once.
    """

    incident: str  # whose ticket (the tag the note can carry)
    marker: str
    repeat: bool = False

    @property
    def text(self) -> str:
        return f"monitor-ref: {self.marker}"

    @staticmethod
    def marker_of(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    @classmethod
    def of(cls, row: Row, incident: str) -> Ref:
        return cls(incident, cls.marker_of(row.key), row.uncertain or row.attempts > 0)


class Desk(Protocol):
    name: str

    async def find(self, incident: str) -> str | None: ...

    async def find_all(self, incident: str) -> list[str]:
        """Every ticket carrying the incident's tag, oldest first (empty when the desk cannot tell)."""
        ...

    async def merge(self, ticket: str, into: str) -> None:
        """Fold the duplicate ``ticket`` into ``into`` (only asked when ``find_all`` found both)."""
        ...

    async def open(self, incident: str, subject: str, body: str) -> str: ...

    async def update(self, ticket: str, subject: str) -> None: ...

    async def comment(self, ticket: str, body: str, ref: Ref | None = None) -> None: ...

    async def resolve(self, ticket: str, body: str, ref: Ref | None = None) -> None: ...

    async def reopen(self, ticket: str, body: str, ref: Ref | None = None) -> None: ...

    async def taken(self, ticket: str) -> bool: ...

    async def close(self) -> None: ...


class DeskSender:
    """The ``desk`` channel: rows with ``op`` open/comment/resolve/reopen for one ticket each."""

    channel = "desk"

    def __init__(self, desk: Desk, outbox: Outbox) -> None:
        self.desk = desk
        self.outbox = outbox
        self._checked: set[str] = set()  # incidents whose tickets this process has looked over

    async def ticket_of(self, incident: str, *, check: bool = False) -> str | None:
        """The incident's ticket. The desk is asked (and duplicates merged, :meth:`one_ticket`) the first
        time this process needs it, and whenever ``check``; otherwise the outbox's map answers."""
        known = self.outbox.ticket(incident)
        if known is not None and not check and incident in self._checked:
            return known
        return await self.one_ticket(incident, known)

    async def one_ticket(self, incident: str, known: str | None) -> str | None:
        """Every ticket with the incident's tag folded into the oldest, which is recorded and returned.
        A ``known`` ticket that no longer carries the tag (staff renamed it) is kept as it is."""
        found = await self.desk.find_all(incident)
        self._checked.add(incident)
        if not found or (known is not None and known not in found):
            return known
        keep = found[0]
        for dup in found[1:]:
            await self.desk.merge(dup, keep)
            event(log, logging.WARNING, "duplicate ticket merged", incident=incident, desk=self.desk.name,
                  ticket=dup, into=keep)
        if keep != known:
            self.outbox.set_ticket(incident, self.desk.name, keep)
        return keep

    async def send(self, row: Row, handed_over: HandedOver | None = None) -> str | None:
        p = row.payload
        op, owner = p["op"], p["ticket_incident"]
        ticket = await self.ticket_of(owner, check=op in ("resolve", "reopen"))
        if op == "open":
            if ticket is None:
                ticket = await self.desk.open(owner, p["subject"], p["body"])
                self.outbox.set_ticket(owner, self.desk.name, ticket)
            return ticket
        if ticket is None:
            raise DeliveryRetryable(f"no ticket for {owner} yet", "no_ticket")
        ref = Ref.of(row, owner)
        if op == "comment":
            await self.desk.comment(ticket, p["body"], ref)
        elif op == "resolve":
            await self.desk.resolve(ticket, p["body"], ref)
        elif op == "reopen":
            await self.desk.reopen(ticket, p["body"], ref)
            if row.incident != owner:
                self.outbox.set_ticket(row.incident, self.desk.name, ticket)
        return ticket

    async def close(self) -> None:
        await self.desk.close()
