"""Bind an aiohttp application to ``HOST:PORT`` the way every listener of the daemon does.

Shared by the staff API and the public status page: no access log (it would put tokens, link
signatures and lookup numbers in journald), no signal handling (the daemon owns the signals), and a
port that cannot be bound is one :class:`MonitorError` naming the address and the reason.
"""

from __future__ import annotations

import os

from aiohttp import web

from monitor.errors import MonitorError


async def listen(app: web.Application, address: str, what: str) -> web.AppRunner:
    """Serve ``app`` on ``address``; the caller keeps the runner and cleans it up to stop."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, _, port = address.rpartition(":")
    try:
        await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    except OSError as exc:
        await runner.cleanup()
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise MonitorError(f"cannot serve {what} on {address}: {why}") from exc
    return runner
