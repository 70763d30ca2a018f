"""A server that a test stops and starts again on the same data dir and port (storage tests)."""

from __future__ import annotations

from pathlib import Path

from tests.servers.common import Process, wait_for


class RestartableServer:
    """Subclasses set ``argv``, ``root`` and ``name`` and implement ``ready()``."""

    argv: list[str]
    root: Path
    name: str
    process: Process | None = None

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> None:
        """Start (again) and wait until it answers; the PID is the one we started."""
        process = self.process = Process(self.argv, self.root / f"{self.name}.log")
        process.start()
        try:
            wait_for(lambda: process.alive() and self.ready(), timeout, self.name)
        except TimeoutError as exc:
            log = process.log_tail()
            process.stop()
            raise RuntimeError(f"{self.name} did not start:\n{log}") from exc

    def stop(self) -> None:
        """SIGTERM by the PID we started, and wait until it has exited."""
        if self.process is not None:
            self.process.stop()
