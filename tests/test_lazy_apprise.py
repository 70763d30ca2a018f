"""Apprise (~700 modules, +40-51 MB RSS) is loaded only by a config that uses it (docs/benchmarks.md).

Each check runs in a fresh interpreter: this test session has imported Apprise long before (other
test modules import the sender), so only a new process shows what the daemon's imports load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.delivery_support import SECRETS, base_delivery, write_config

ROOT = Path(__file__).parents[1]
SITES = ROOT / "config" / "sites.yaml"

# imports what `monitor run` imports (the daemon, the pipeline, the delivery service and its channel
# registry), loads each config given and says, after each, whether Apprise is loaded and what
# the load said
CHILD = r"""
import json, sys
import monitor.cli, monitor.daemon, monitor.pipeline, monitor.delivery.service, monitor.delivery.channels
from monitor.errors import ConfigError
from monitor.inventory.loader import load_inventory
out = []
for path in sys.argv[1:]:
    try:
        inv = load_inventory(path)
        d = inv.delivery
        said = "ok " + (str(sum(len(t.apprise) for t in d.technicians.values())) if d is not None else "-")
    except ConfigError as exc:
        said = str(exc)
    out.append([said, "apprise" in sys.modules])
print(json.dumps(out))
"""


def run_child(*configs: Path, env: dict[str, str]) -> list[list[object]]:
    done = subprocess.run([sys.executable, "-c", CHILD, *map(str, configs)], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result: list[list[object]] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_a_config_without_apprise_never_loads_it(tmp_path: Path) -> None:
    sample = yaml.safe_load(SITES.read_text(encoding="utf-8"))
    assert "apprise" not in json.dumps(sample.get("delivery") or {})  # the shipped example has none
    mail_only = write_config(tmp_path, 5, base_delivery())  # email, MQTT, RT: no phones
    assert run_child(SITES, mail_only, env=SECRETS) == [["ok -", False], ["ok 0", False]]


def test_apprise_urls_are_still_checked_by_apprise_when_configured(tmp_path: Path) -> None:
    d = base_delivery(apprise={"rates": {"ntfy": 2}})
    d["technicians"][0]["apprise"] = [{"env": "JUAN_NTFY"}, {"env": "JUAN_JSON"}]
    good = write_config(tmp_path, 5, d)
    env = {**SECRETS, "JUAN_NTFY": "ntfy://127.0.0.1:9/alertas", "JUAN_JSON": "json://127.0.0.1:9/sms"}
    assert run_child(good, env=env) == [["ok 2", True]]
    # the same checks as before: an unknown service and a URL its plugin refuses, each named by reference
    (tmp_path / "bad").mkdir()
    bad = write_config(tmp_path / "bad", 5, base_delivery(apprise={"rates": {"nosuch": 2}}))
    (said, loaded), = run_child(bad, env={**env, "JUAN_JSON": "nosuchservice://127.0.0.1/x"})
    assert loaded is True and "unknown Apprise service 'nosuch'" in str(said)
    bad = write_config(tmp_path / "bad", 5, d)
    (said, loaded), = run_child(bad, env={**env, "JUAN_JSON": "nosuchservice://127.0.0.1/x"})
    assert loaded is True and "env:JUAN_JSON" in str(said) and "names no service Apprise knows" in str(said)
