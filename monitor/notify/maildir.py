"""The email channel into a local Maildir: the same messages the SMTP sender sends, as files.

For ``monitor demo``, dry runs and machines without a relay. The message is built by
:func:`monitor.notify.email.build` (same headers, same stable ``Message-ID``), written to ``tmp/``
and renamed into ``new/`` (atomic, so a reader never sees half a mail). The file name derives from
the Message-ID, so an item repeated after a crash overwrites its own file instead of adding a copy:
exactly one file per logical message. Any mail client or ``mailbox.Maildir`` reads the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from monitor.delivery.config import MaildirSettings
from monitor.delivery.outbox import HandedOver, Row
from monitor.delivery.retry import DeliveryRetryable
from monitor.notify.email import build


class MaildirSender:
    channel = "email"

    def __init__(self, settings: MaildirSettings) -> None:
        self.settings = settings
        self.root = Path(settings.path)

    def _write(self, name: str, data: bytes) -> None:
        for sub in ("tmp", "new", "cur"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        tmp = self.root / "tmp" / name
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / "new" / name)

    async def send(self, row: Row, handed_over: HandedOver | None = None) -> str | None:
        msg = build(row, self.settings.sender)
        mid = str(msg["Message-ID"])
        # "<time>.<unique>.<host>" as Maildir readers expect; unique = the Message-ID's hash part
        name = f"{int(row.created_at)}.{mid.strip('<>').partition('@')[0]}.monitor"
        try:
            self._write(name, msg.as_bytes())
        except OSError as exc:
            raise DeliveryRetryable(f"cannot write to the maildir {self.root}: {exc.strerror}", "io") from exc
        return mid

    async def close(self) -> None:
        return None
