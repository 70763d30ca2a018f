"""Tools that send nothing (report, incidents, maintenance, replay) run where secrets cannot be read.

Why: install.md gives secrets as ``{credential: NAME}``, which only a systemd unit with LoadCredential=
can read; a technician running ``monitor incidents ack`` in a shell, or the monthly report unit, must
not fail on the SNMP community it never uses. The daemon and check-config still resolve every secret.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.cli import main
from monitor.errors import ConfigError
from monitor.inventory.loader import load_inventory
from monitor.store import EventStore

EXAMPLE = Path(__file__).resolve().parents[1] / "config"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    for name in ("customers.csv", "secrets"):
        (tmp_path / name).symlink_to(EXAMPLE / name)
    text, ref = (EXAMPLE / "sites.yaml").read_text(), "community: {file: secrets/snmp-community}"
    assert ref in text
    path = tmp_path / "sites.yaml"
    path.write_text(text.replace(ref, "community: {credential: snmp-community}"))
    return path


def test_check_config_still_needs_the_credential(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(config)]) == 2
    assert "credential snmp-community: CREDENTIALS_DIRECTORY is not set" in capsys.readouterr().err


def test_report_incidents_maintenance_and_replay_run_without_it(config: Path, tmp_path: Path) -> None:
    EventStore(tmp_path / "var" / "monitor.db").close()  # as the daemon left it
    cfg = ["--config", str(config)]
    assert main(["maintenance", "add", *cfg, "--node", "ap-centro-1", "--start", "2026-11-24T02:00:00-05:00",
                 "--duration", "2h", "--by", "ana"]) == 0
    assert main(["incidents", "list", *cfg]) == 0
    assert main(["report", *cfg, "--month", "2026-10", "--quiet", "--output", str(tmp_path / "r.md")]) == 0
    (tmp_path / "in.jsonl").write_text('{"ts": "2026-11-01T00:00:00Z", "target": "core-arauca", "ok": true}\n')
    assert main(["replay", *cfg, "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "o.jsonl")]) == 0


def test_without_secrets_the_form_is_still_checked(config: Path) -> None:
    inv = load_inventory(config, secrets=False)
    assert inv.credentials["v2-default"].community is None and inv.credentials["v3-core"].auth_key is None
    config.write_text(config.read_text().replace("community: {credential: snmp-community}", "community: public"))
    with pytest.raises(ConfigError, match="secrets cannot be written inline"):
        load_inventory(config, secrets=False)
