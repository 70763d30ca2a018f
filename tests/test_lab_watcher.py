"""The lab's MQTT watcher (``tests/lab/delivery.py``) sees a message published right after it is ready.

Before, it was ready once its ``mosquitto_sub`` process ran, not once it had subscribed: a message
the daemon published in between was lost to it and the lab's delivery checks failed under load.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.lab.delivery import PREFIX, mqtt_watcher
from tests.lab.processes import started_here
from tests.servers.common import require_binary, wait_for
from tests.servers.mosquitto import Mosquitto

pytestmark = pytest.mark.servers


def test_a_message_published_once_right_after_the_watcher_is_ready_is_seen(tmp_path: Path) -> None:
    broker, log = Mosquitto(tmp_path), tmp_path / "watcher.log"
    with started_here(broker), mqtt_watcher(broker.port, log) as watcher:
        subprocess.run([require_binary("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
                        "-t", f"{PREFIX}/technicians/arauca", "-m", '{"event": "alert"}'], check=True, timeout=10)
        line = f'{PREFIX}/technicians/arauca {{"event": "alert"}}'
        wait_for(lambda: line in log.read_text().splitlines(), 30, "the message in the log")
        assert watcher.alive()
