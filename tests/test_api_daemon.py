"""The API lives and dies with the daemon process: up after start, moved by SIGHUP, gone on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from monitor.daemon import Daemon
from monitor.errors import MonitorError
from tests.api_support import TOKEN
from tests.servers.common import free_port, wait_for
from tests.test_daemon import start_daemon, write_config

pytestmark = pytest.mark.root


def get(port: int, token: str | None = TOKEN) -> tuple[int, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/incidents")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def refused(port: int) -> bool:
    try:
        get(port)
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    return False


def with_api(cfg: Path, port: int) -> None:
    base = cfg.read_text().split("\napi:", 1)[0]
    cfg.write_text(base + f'\napi: {{listen: "127.0.0.1:{port}", token: {{env: API_TOKEN}}}}\n')


def test_api_comes_up_with_the_daemon_moves_on_sighup_and_goes_on_sigterm(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, free_port())
    first, second = free_port(), free_port()
    with_api(cfg, first)
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, log, API_TOKEN=TOKEN)
    try:
        wait_for(lambda: get(first) == (200, []), 60, "the API on the first port")
        assert get(first, token=None) == (401, {"error": "missing or wrong bearer token"})
        with_api(cfg, second)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: get(second) == (200, []), 60, "the API on the new port after SIGHUP")
        assert refused(first)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert refused(second)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "API listening" in text and "API restarted for the reloaded config" in text and "monitor stopped" in text
    assert TOKEN not in text


async def test_api_port_in_use_stops_the_start_with_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   ) -> None:
    monkeypatch.setenv("API_TOKEN", TOKEN)
    cfg = write_config(tmp_path, free_port())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with_api(cfg, busy.getsockname()[1])
        with pytest.raises(MonitorError, match=r"cannot serve the API on 127\.0\.0\.1:\d+: Address already in use"):
            await Daemon(cfg).run()
