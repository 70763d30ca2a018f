"""A delivery process the crash tests kill: ``python -m tests.delivery_child CONFIG DB EVENTS [--die-...]``.

``DB`` is the store: a SQLite file, or a PostgreSQL URL (tests.store_engines.child_argument).

It loads the config, enqueues the events (JSON lines of IncidentEvent fields) and runs the service
until the outbox is empty. It SIGKILLs itself
- ``--die-on-record[=N]``: when a worker is about to record its N-th delivered row (default 1):
  after that send, before its record, while the other lanes are mid-send — the window the outbox
  must survive without a second ticket or a second email;
- ``--die-before-dot=N``: while sending the N-th mail, after its body went out and before the
  final ``.`` of the DATA phase — the server must discard it, and the next start sends it once;
- ``--die-before-last-byte=N``: while sending the N-th HTTP request of the apprise channel, after all
  but its last byte went out — the receiver must not act on it, and the next start sends it once;
- ``--die-after-handover=N``: right after the N-th HTTP request's last byte went out and its row was
  recorded as handed over, before its answer is read — the next start counts it as delivered.
Its clock stands at T0 (when the events happened) at the real time ``--t0-at=EPOCH`` (default: its
start), so a run that takes a while on a loaded machine does not make the incident due for escalation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monitor.correlate.incidents import IncidentEvent
from monitor.delivery.outbox import Outbox
from monitor.delivery.service import DeliveryService
from monitor.inventory.loader import load_inventory
from tests.delivery_support import SECRETS, T0, ClockFrom
from tests.store_engines import from_argument


def main() -> None:
    config, db, events_file = sys.argv[1:4]
    die = next((int(a.partition("=")[2] or 1) for a in sys.argv if a.startswith("--die-on-record")), 0)
    t0_at = next((float(a.partition("=")[2]) for a in sys.argv if a.startswith("--t0-at=")), None)
    before_dot = next((int(a.partition("=")[2]) for a in sys.argv if a.startswith("--die-before-dot=")), 0)
    if before_dot:
        import aiosmtplib.protocol

        write = aiosmtplib.protocol.SMTPProtocol.write
        mails = [0]

        def cut(self: aiosmtplib.protocol.SMTPProtocol, data: bytes) -> None:
            if data.endswith(b"\r\n.\r\n"):
                mails[0] += 1
                if mails[0] >= before_dot:
                    write(self, data[:-3])
                    mid = next(line for line in data.splitlines() if line.lower().startswith(b"message-id:"))
                    sys.stderr.buffer.write(b"cut " + mid.split(b":", 1)[1].strip() + b"\n")
                    sys.stderr.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            write(self, data)

        aiosmtplib.protocol.SMTPProtocol.write = cut  # type: ignore[method-assign]
    last_byte = next((int(a.partition("=")[2]) for a in sys.argv if a.startswith("--die-before-last-byte=")), 0)
    after_handover = next((int(a.partition("=")[2]) for a in sys.argv if a.startswith("--die-after-handover=")), 0)
    if last_byte or after_handover:
        from monitor.notify import handover

        final, requests = handover.Handover._final, [0]

        def cut_http(self: handover.Handover, conn: Any, byte: bytes, done: Any) -> None:
            requests[0] += 1
            if last_byte and requests[0] >= last_byte:
                os.kill(os.getpid(), signal.SIGKILL)
            final(self, conn, byte, done)
            if after_handover and requests[0] >= after_handover and self.handed:
                os.kill(os.getpid(), signal.SIGKILL)

        handover.Handover._final = cut_http  # type: ignore[method-assign]
    if die:
        real = Outbox.finish
        seen = [0]

        def finish(self: Outbox, delivered: Sequence[tuple[int, str | None]],
                   retries: Sequence[tuple[int, float, str, str]], failed: Sequence[tuple[int, str, str]],
                   now: float, sending: Sequence[int] = ()) -> None:
            seen[0] += len(delivered)
            if seen[0] >= die:
                os.kill(os.getpid(), signal.SIGKILL)
            real(self, delivered, retries, failed, now, sending)

        Outbox.finish = finish  # type: ignore[method-assign]
    inv = load_inventory(config, env={**os.environ, **SECRETS})
    assert inv.delivery is not None
    events = [IncidentEvent(**{**d, "affected_endpoints": tuple(d["affected_endpoints"]),
                               "affected_customers": tuple(d["affected_customers"]),
                               "affected_nodes": tuple(d["affected_nodes"])})
              for d in map(json.loads, Path(events_file).read_text().splitlines())] if events_file != "-" else []

    async def run() -> None:
        svc = DeliveryService(inv, from_argument(db), inv.delivery, ClockFrom(T0, t0_at))  # type: ignore[arg-type]
        svc.enqueue(events)
        task = asyncio.create_task(svc.run())
        while sum(n for n, _ in svc.outbox.pending().values()):
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await svc.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
