"""A service desk that is a folder: one text file per ticket, every later operation appended.

For ``monitor demo`` and for ISPs without a desk yet who still want a durable, greppable record of
every incident. The ticket id is the incident id (``INC-000001.txt``), so ``find`` is a file check
and a repeated ``open`` after a crash finds the file instead of writing a second ticket. Comments,
resolution and reopening are appended as sections headed ``--- <UTC time> · <operation> ---``,
ending with the note's ``monitor-ref: <marker>`` line; a repeat after a crash whose marker is in the
file already is not appended again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from monitor.delivery.retry import DeliveryRetryable
from monitor.desk.base import Ref


class FolderDesk:
    name = "folder"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _file(self, ticket: str) -> Path:
        return self.root / f"{ticket}.txt"

    def _append(self, ticket: str, op: str, text: str, ref: Ref | None = None) -> None:
        if ref is not None:
            if ref.repeat and self._has(ticket, ref):
                return
            text = f"{text.rstrip()}\n{ref.text}"
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self._file(ticket), "a", encoding="utf-8") as f:
                f.write(f"\n--- {stamp} · {op} ---\n{text.rstrip()}\n")
        except OSError as exc:
            raise DeliveryRetryable(f"cannot write ticket {ticket} in {self.root}: {exc.strerror}", "io") from exc

    def _has(self, ticket: str, ref: Ref) -> bool:
        try:
            return ref.text in self._file(ticket).read_text(encoding="utf-8")
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise DeliveryRetryable(f"cannot read ticket {ticket} in {self.root}: {exc.strerror}", "io") from exc

    async def find(self, incident: str) -> str | None:
        return incident if self._file(incident).exists() else None

    async def find_all(self, incident: str) -> list[str]:
        return [incident] if self._file(incident).exists() else []  # one file per incident: never two

    async def merge(self, ticket: str, into: str) -> None:
        return None  # (never asked: find_all finds at most one)

    async def open(self, incident: str, subject: str, body: str) -> str:
        if not self._file(incident).exists():
            self._append(incident, "opened", f"Subject: {subject}\n\n{body}")
        return incident

    async def update(self, ticket: str, subject: str) -> None:
        self._append(ticket, "subject changed", f"Subject: {subject}")

    async def comment(self, ticket: str, body: str, ref: Ref | None = None) -> None:
        self._append(ticket, "comment", body, ref)

    async def resolve(self, ticket: str, body: str, ref: Ref | None = None) -> None:
        self._append(ticket, "resolved", body, ref)

    async def reopen(self, ticket: str, body: str, ref: Ref | None = None) -> None:
        self._append(ticket, "reopened", body, ref)

    async def taken(self, ticket: str) -> bool:
        return False  # nobody takes a ticket in a folder; acknowledge with `monitor incidents ack`

    async def close(self) -> None:
        return None
