"""The status_page: section: absent = off; the example turns it on at loopback; each mistake is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.errors import ConfigError
from monitor.inventory.loader import load_inventory
from tests.test_daemon import write_config

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "sites.yaml"


def load_with(tmp_path: Path, section: Any) -> Any:
    path = write_config(tmp_path, 19108)
    doc = yaml.safe_load(path.read_text())
    doc["status_page"] = section
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return load_inventory(path).status_page


def test_absent_is_off_and_the_example_serves_it_on_loopback(tmp_path: Path) -> None:
    assert load_inventory(write_config(tmp_path, 19108)).status_page is None
    page = load_inventory(EXAMPLE, secrets=False).status_page
    assert page is not None and page.listen == "127.0.0.1:9110" and page.lookup_check == "phone"
    assert page.timezone == "America/Bogota" and page.report_contact


def test_valid_section(tmp_path: Path) -> None:
    page = load_with(tmp_path, {"listen": "127.0.0.1:9111", "title": "Llanos Net", "timezone": "America/Bogota",
                                "lookup_check": "none", "lookup_per_minute": 20, "trust_forwarded": True,
                                "refresh": "1s", "history_days": 30})
    assert (page.listen, page.title, page.lookup_check, page.lookup_per_minute, page.trust_forwarded,
            page.refresh, page.history_days) == ("127.0.0.1:9111", "Llanos Net", "none", 20, True, 1.0, 30)


@pytest.mark.parametrize(("section", "message"), [
    ({"listen": "127.0.0.1:19108"}, "status_page.listen: 127.0.0.1:19108 is already daemon.metrics_listen"),
    ({"listen": "nowhere"}, "status_page.listen: bad listen address 'nowhere'"),
    ({"timezone": "Mars/Olympus"}, "status_page.timezone: unknown time zone 'Mars/Olympus'"),
    ({"lookup_check": "dna"}, "status_page.lookup_check: bad value 'dna' (expected one of: none, phone)"),
    ({"lookup_per_minute": 0}, "status_page.lookup_per_minute: must be"),
    ({"refresh": ".nan"}, "status_page.refresh: bad duration"),
    ({"title": "x" * 201}, "status_page.title: expected one line of at most 200 characters"),
    ({"report_contact": "a\nb"}, "status_page.report_contact: expected one line"),
    ({"colour": "red"}, "status_page: unknown key 'colour'"),
])
def test_mistakes_are_named(tmp_path: Path, section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_with(tmp_path, section)
    assert any(message in p for p in err.value.problems), err.value.problems
