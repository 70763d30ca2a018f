"""The daemon's handle on the status page's own process (:mod:`monitor.web.child`).

Same shape as the API server for the daemon: ``start()`` (a bind failure is a :class:`MonitorError`
naming the address), ``serve()`` (the TaskGroup task: restarts the child if it dies, stops it when
cancelled), ``stop()``, and ``set_inventory()`` on a reload (a SIGHUP to the child).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from monitor.errors import MonitorError
from monitor.inventory.model import Inventory
from monitor.logs import event
from monitor.web.config import StatusPageSettings

log = logging.getLogger("monitor.web")
START_TIMEOUT = 60.0  # the child loads the config and reads the store before it binds
RESTART_AFTER = 5.0


class StatusProcess:
    def __init__(self, settings: StatusPageSettings, config: Path) -> None:
        self.settings = settings
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None

    @classmethod
    def for_inventory(cls, inv: Inventory, config: Path) -> StatusProcess | None:
        if inv.status_page is None or not inv.status_page.listen:
            return None
        return cls(inv.status_page, config)

    async def start(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor.web.child", str(self.config),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)).decode(errors="replace").strip()
        except TimeoutError:
            line = "error: did not start in time"
        if line != "ready":
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise MonitorError(line.removeprefix("error: ") or f"the status page process exited ({proc.returncode})")
        self.proc = proc

    async def serve(self) -> None:
        """Until cancelled: a child that dies is started again (after a pause), the rest is its own."""
        try:
            while True:
                if self.proc is not None:
                    code = await self.proc.wait()
                    event(log, logging.ERROR, "status page process exited; starting it again", code=code)
                    self.proc = None
                await asyncio.sleep(RESTART_AFTER)
                try:
                    await self.start()
                except MonitorError as exc:
                    event(log, logging.ERROR, "status page process did not start", error=exc)
        finally:
            await self.stop()

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def set_inventory(self, inv: Inventory) -> None:
        """The config was reloaded with the same ``status_page:``: the child reads it again."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGHUP)
