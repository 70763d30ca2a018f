"""Request Tracker 5 through its REST2 API (aiohttp).

The ticket of an incident is found by its subject tag (``[INC-000123]``) with TicketSQL, which is
what makes creation idempotent across crashes. Comments are RT comments (internal, not mailed to
requestors) whose Subject carries the note's reference (``[INC-000123] monitor-ref: <hash>``): a
repeat after a crash first asks TransactionSQL for a comment with that Subject on the ticket and
skips the post if RT has it (Subject, not Content: RT without a full-text index cannot search
bodies). Resolve and reopen are one comment with the new Status (one request); a repeat whose
comment is found only sets the status. A ticket whose Owner is no longer ``Nobody`` was taken by
staff, which counts as an acknowledgement of the incident.

A late duplicate (two tickets with one tag: a deposed daemon's create request that arrived after the
standby had looked and opened its own) is merged with RT's own merge (REST2: an update with
``MergeInto``): the duplicate's history moves into the kept ticket, the duplicate's number leads
there, and searches no longer list it. RT answers a refused merge with 200 and a message, so the
merge is read back: the duplicate's number must now load the kept ticket.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import aiohttp

from monitor import jsonbound
from monitor.delivery.config import DeskSettings
from monitor.delivery.retry import DeliveryPermanent, DeliveryRetryable
from monitor.desk.base import Ref, tag
from monitor.ha.gate import GATE

MAX_ANSWER = 1 << 20  # bytes of one REST2 answer; ours ask for at most 20 tickets or 1 transaction
MAX_TAGGED = 20  # tickets with one tag looked at (a desk with more has worse trouble than duplicates)


class RTDesk:
    name = "rt"

    def __init__(self, settings: DeskSettings) -> None:
        self.s = settings
        base = settings.url.rstrip("/")
        self.api = base if base.endswith("/REST/2.0") else base + "/REST/2.0"
        self._session: aiohttp.ClientSession | None = None

    def _headers(self) -> dict[str, str]:
        if self.s.token is not None:
            return {"Authorization": f"token {self.s.token.reveal()}"}
        user = self.s.username or "root"
        pw = self.s.password.reveal() if self.s.password is not None else ""
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """RT's JSON answer; every failure, odd answers included, is a :class:`DeliveryError`. Nothing is
        sent once this daemon's lease is past its stand-down deadline (:mod:`monitor.ha.gate`)."""
        GATE.check(f"RT {method} {path.split('?')[0]}")
        try:
            async with self._http().request(method, self.api + path, json=body, headers=self._headers()) as resp:
                raw = await _read(resp)
                if resp.status in (408, 429) or resp.status >= 500:
                    raise DeliveryRetryable(f"RT answered {resp.status} to {method} {path}", f"http_{resp.status}")
                if resp.status in (401, 403):
                    raise DeliveryRetryable(f"RT refused our credentials ({resp.status})", "auth")
                if resp.status >= 400:
                    text = raw[:200].decode(errors="replace")
                    raise DeliveryPermanent(f"RT answered {resp.status} to {method} {path}: {text}",
                                            f"http_{resp.status}")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise DeliveryRetryable(f"RT unreachable: {type(exc).__name__}", "unreachable") from exc
        if not raw.strip():
            return None
        try:  # REST2 is JSON in UTF-8 whatever the header says; a proxy's HTML page is not an answer
            return jsonbound.loads(raw.decode("utf-8"))
        except ValueError:  # jsonbound.TooDeep included
            raise DeliveryRetryable(f"RT answered {method} {path} with something that is not JSON",
                                    "bad_answer") from None

    async def find(self, incident: str) -> str | None:
        found = await self.find_all(incident)
        return found[0] if found else None

    async def find_all(self, incident: str) -> list[str]:
        query = f"Subject LIKE '{tag(incident)}'"
        found = await self._call("GET", f"/tickets?query={quote(query, safe='')}&orderby=id&order=ASC"
                                 f"&per_page={MAX_TAGGED}&fields=Subject")
        ids = {_ticket_id(item.get("id"), "GET /tickets") for item in _items(found, "GET /tickets")
               if isinstance(item, dict) and tag(incident) in str(item.get("Subject", ""))}
        return sorted(ids, key=int)

    async def merge(self, ticket: str, into: str) -> None:
        said = await self._call("PUT", f"/ticket/{ticket}", {"MergeInto": into})
        now = _object(await self._call("GET", f"/ticket/{ticket}"), "GET /ticket")
        if str(now.get("id")) != into:
            text = json.dumps(said)[:200] if said is not None else "nothing"
            raise DeliveryRetryable(f"RT did not merge ticket {ticket} into {into}: it answered {text}",
                                    "merge_refused")

    async def open(self, incident: str, subject: str, body: str) -> str:
        if tag(incident) not in subject:
            subject = f"{tag(incident)} {subject}"
        made = await self._call("POST", "/ticket", {"Queue": self.s.queue, "Subject": subject, "Content": body,
                                                   "ContentType": "text/plain"})
        return _ticket_id(_object(made, "POST /ticket").get("id"), "POST /ticket")

    async def update(self, ticket: str, subject: str) -> None:
        await self._call("PUT", f"/ticket/{ticket}", {"Subject": subject})

    async def comment(self, ticket: str, body: str, ref: Ref | None = None) -> None:
        await self._note(ticket, body, ref)

    async def resolve(self, ticket: str, body: str, ref: Ref | None = None) -> None:
        await self._note(ticket, body, ref, "resolved")

    async def reopen(self, ticket: str, body: str, ref: Ref | None = None) -> None:
        await self._note(ticket, body, ref, "open")

    async def _note(self, ticket: str, body: str, ref: Ref | None, status: str | None = None) -> None:
        if ref is not None and ref.repeat and await self._has(ticket, ref):
            if status is not None:
                await self._call("PUT", f"/ticket/{ticket}", {"Status": status})
            return
        doc = {"Content": body, "ContentType": "text/plain"}
        if ref is not None:
            doc["Subject"] = f"{tag(ref.incident)} {ref.text}"
        if status is not None:
            doc["Status"] = status
        await self._call("POST", f"/ticket/{ticket}/comment", doc)

    async def _has(self, ticket: str, ref: Ref) -> bool:
        """Whether the ticket already has the comment ``ref`` marks (asked only on repeats)."""
        query = (f"ObjectType = 'RT::Ticket' AND ObjectId = {ticket} AND Type = 'Comment'"
                 f" AND Subject LIKE '{ref.text}'")
        found = await self._call("GET", f"/transactions?query={quote(query, safe='')}&per_page=1")
        return bool(_items(found, "GET /transactions"))

    async def taken(self, ticket: str) -> bool:
        t = await self._call("GET", f"/ticket/{ticket}")
        owner = _object(t, "GET /ticket").get("Owner", {})
        who = owner.get("id", "Nobody") if isinstance(owner, dict) else owner  # an object, or just the name
        if not isinstance(who, str | int) or isinstance(who, bool):
            raise DeliveryRetryable("RT answered GET /ticket with an Owner that is not a user", "bad_answer")
        return str(who) != "Nobody"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    """The body, at most :data:`MAX_ANSWER` bytes: an endless answer must not take all memory."""
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER:
            raise DeliveryRetryable(f"RT's answer is too large (over {MAX_ANSWER} bytes)", "bad_answer")
        chunks.append(chunk)
    return b"".join(chunks)


def _object(doc: Any, what: str) -> dict[str, Any]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise DeliveryRetryable(f"RT answered {what} with JSON that is not an object", "bad_answer")
    return doc


def _items(doc: Any, what: str) -> list[Any]:
    items = _object(doc, what).get("items", [])
    if not isinstance(items, list):
        raise DeliveryRetryable(f"RT answered {what} with items that are not a list", "bad_answer")
    return items


def _ticket_id(value: object, what: str) -> str:
    """A ticket number; it goes into URL paths, so nothing but digits (RT's ids are integers)."""
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise DeliveryRetryable(f"RT answered {what} without a ticket number", "bad_answer")
    return text
