"""The outside world that incidents are delivered to: RT 5, an SMTP server, mosquitto and a subscriber.

Started by the ``isp`` fixture only once the daemon delivers (``daemon_delivers()``: the lead wires
``DeliveryService`` into ``monitor/daemon.py``); until then the lab's checks assert on the store,
the event log and InfluxDB only. The MQTT subscriber is ``mosquitto_sub`` (a real external client)
writing ``topic payload`` lines to a file, so synchronous tests can read what was published. It is
relied upon only once it has really subscribed (a probe it printed), not merely once its process runs:
a message published between its start and its SUBSCRIBE would be lost to it, and a check would fail.
"""

from __future__ import annotations

import email
import email.policy
import inspect
import json
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tests.lab.processes import LabProcess, started_here
from tests.servers.common import require_binary, wait_for
from tests.servers.mosquitto import Mosquitto
from tests.servers.rt import PASSWORD, USER, RequestTracker
from tests.servers.smtp import SmtpServer

PREFIX = "lab"
# What the subject of each customer notice contains (Spanish templates); maintenance notices carry
# the window (MW-<id>) where incident notices carry the incident id.
NOTICE_SUBJECT = {"opened": "Falla de servicio", "restored": "Servicio restablecido",
                  "maintenance_advance": "Mantenimiento programado en", "maintenance_start": "Inicia el mantenimiento",
                  "maintenance_end": "Terminó el mantenimiento"}
TECHNICIANS = {"arauca": "ana@isp.example", "saravena": "sara@isp.example"}


def daemon_delivers() -> bool:
    """Whether the daemon runs the delivery service (wired by the lead; issue 4)."""
    import monitor.daemon

    return "DeliveryService" in inspect.getsource(monitor.daemon)


@dataclass
class Receivers:
    rt: RequestTracker
    smtp: SmtpServer
    broker: Mosquitto
    mqtt_log: Path

    def delivery_yaml(self, folder: Path) -> str:
        """The inventory's ``delivery:`` section pointing at these servers."""
        (folder / "rt-password").write_text(PASSWORD + "\n")
        return f"""delivery:
  timezone: America/Bogota
  smtp: {{host: 127.0.0.1, port: {self.smtp.port}, security: none, from: "NOC Lab <noc@isp.example>"}}
  mqtt: {{host: 127.0.0.1, port: {self.broker.port}, prefix: {PREFIX}}}
  desk: {{kind: rt, url: "{self.rt.url}", username: {USER}, password: {{file: rt-password}}}}
  technicians:
    - {{id: ana, name: Ana Arauca, email: {TECHNICIANS["arauca"]}}}
    - {{id: sara, name: Sara Saravena, email: {TECHNICIANS["saravena"]}}}
    - {{id: noc, name: Jefe NOC, email: noc@isp.example}}
  oncall:
    - {{municipality: arauca, shifts: [{{days: [mon-sun], tiers: [ana, noc]}}]}}
    - {{municipality: saravena, shifts: [{{days: [mon-sun], tiers: [sara, noc]}}]}}
  escalation: {{after: 24h}}
  customers: {{company: Lab Net, support_phone: "+57 607 000 0000"}}
  retry: {{initial: 0.2s, maximum: 1s}}
"""

    def mails(self, incident: str) -> list[EmailMessage]:
        return [m for m in self.smtp.messages() if m["X-Monitor-Incident"] == incident]

    def customer_notices(self, incident: str, event: str) -> Counter[str]:
        """Recipients of the customer notices of one kind, logical messages only: ``opened``/``restored``
        of an incident, or a ``maintenance_*`` phase of a window (``incident`` = ``MW-<id>``)."""
        seen = {str(m["Message-ID"]): m for m in self.mails(incident)}
        return Counter(str(m["To"]) for m in seen.values() if NOTICE_SUBJECT[event] in str(m["Subject"]))

    def first_arrival(self, incident: str, event: str) -> float:
        """When the first customer notice of that kind reached the SMTP server (its maildir file's mtime)."""
        times = []
        for path in (self.smtp.maildir / "new").iterdir():
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if msg["X-Monitor-Incident"] == incident and NOTICE_SUBJECT[event] in str(msg["Subject"]):
                times.append(path.stat().st_mtime)
        return min(times)

    def technician_mails(self, incident: str, address: str) -> list[str]:
        return [str(m["Subject"]) for m in self.mails(incident) if m["To"] == address]

    def mqtt(self, topic: str) -> list[dict[str, Any]]:
        out = []
        for line in self.mqtt_log.read_text().splitlines() if self.mqtt_log.exists() else []:
            t, _, payload = line.partition(" ")
            if t == topic and payload.startswith("{"):
                out.append(json.loads(payload))
        return out

    def tickets(self, incident: str) -> list[dict[str, Any]]:
        return self.rt.tickets(f"Subject LIKE '{incident}'")


@contextmanager
def mqtt_watcher(port: int, log: Path, timeout: float = 30.0) -> Iterator[LabProcess]:
    """``mosquitto_sub`` on ``PREFIX/#`` writing ``topic payload`` lines to ``log``, yielded once subscribed.

    Its process running says nothing about its subscription (it still has to connect and get its
    SUBACK), so a probe is published on ``PREFIX/_watcher`` (QoS 1, not retained: nothing stays on
    the broker) until the watcher has printed it; only messages published after that are sure to
    be seen. The probe's payload is not JSON, so :meth:`Receivers.mqtt` never returns it.
    """
    watcher = LabProcess([require_binary("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(port), "-q", "1",
                          "-t", f"{PREFIX}/#", "-F", "%t %p"], log)
    watcher.start()
    try:
        try:
            wait_for(_printed_probe(watcher, port, log), timeout, "mosquitto_sub's subscription")
        except TimeoutError as exc:
            raise RuntimeError(f"mosquitto_sub did not subscribe:\n{watcher.log_tail()}") from exc
        yield watcher
    finally:
        watcher.stop()


def _printed_probe(watcher: LabProcess, port: int, log: Path) -> Callable[[], bool]:
    """A ``wait_for`` condition: the watcher printed the probe; else (re)publish it and say not yet."""
    pub = require_binary("mosquitto_pub")
    probe = f"{PREFIX}/_watcher ready"

    def printed() -> bool:
        assert watcher.alive(), "mosquitto_sub exited"
        if probe in log.read_text().splitlines():
            return True
        subprocess.run([pub, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", f"{PREFIX}/_watcher",
                        "-m", "ready"], capture_output=True, timeout=10, check=True)
        return False

    return printed


@contextmanager
def receivers(folder: Path) -> Iterator[Receivers]:
    with ExitStack() as stack:
        servers = []
        for name, cls in (("rt", RequestTracker), ("smtp", SmtpServer), ("mqtt", Mosquitto)):
            (folder / name).mkdir()
            server = cls(folder / name)
            stack.enter_context(started_here(server))
            servers.append(server)
        rt, smtp, broker = servers
        assert isinstance(rt, RequestTracker) and isinstance(smtp, SmtpServer) and isinstance(broker, Mosquitto)
        log = folder / "mqtt.log"
        stack.enter_context(mqtt_watcher(broker.port, log))
        yield Receivers(rt, smtp, broker, log)
