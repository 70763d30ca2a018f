"""The status page's own process: ``python -m monitor.web.child CONFIG`` (started by the daemon).

Why a process: the page is read-only on the store, and a crowd refreshing it during an outage would
otherwise share the daemon's event loop with the polls (measured in bench/web: timers 100+ ms late
at the 99th percentile under load), inflating RTTs and delaying polls exactly when it matters.

Protocol with the daemon: the child loads the config itself (secrets are not needed), binds, and
writes ``ready`` or ``error: <why>`` as its first line on stdout. SIGHUP: load the config again and
take the new inventory (the daemon sends it on a reload that leaves ``status_page:`` unchanged).
SIGTERM, or the daemon's end of stdin closing (the daemon died): stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from monitor import logs
from monitor.clock import SystemClock
from monitor.db import store_location
from monitor.errors import ConfigError, MonitorError
from monitor.inventory.loader import load_inventory
from monitor.logs import event
from monitor.web.server import StatusServer

log = logging.getLogger("monitor.web")


async def run(config: Path) -> int:
    try:
        inv = load_inventory(config, secrets=False)
    except ConfigError as exc:
        print(f"error: {exc.problems[0] if exc.problems else exc}", flush=True)
        return 2
    logs.setup(inv.daemon.log_format, inv.daemon.log_level)
    server = StatusServer.for_inventory(inv, store_location(inv.daemon), SystemClock())
    if server is None:
        print("error: no status_page in the config", flush=True)
        return 2
    try:
        await server.start()
    except MonitorError as exc:
        print(f"error: {exc}", flush=True)
        return 1
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(server.serve())

    def reload() -> None:
        try:
            server.set_inventory(load_inventory(config, secrets=False))
        except ConfigError as exc:
            event(log, logging.ERROR, "status page keeps its inventory: the reloaded config is bad", error=exc)

    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    # Ctrl-C in a terminal reaches the whole process group: the daemon decides, and sends SIGTERM
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    loop.add_signal_handler(signal.SIGHUP, reload)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    orphaned = asyncio.create_task(reader.read())  # EOF: the daemon is gone
    await asyncio.wait({task, orphaned}, return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    orphaned.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(run(Path(sys.argv[1]))))
