"""The delivery: section: a valid example loads into typed settings; each mistake gets an exact message."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.delivery.outbox import Row
from monitor.delivery.planner import Context, Plan, _to_customer
from monitor.errors import ConfigError
from monitor.inventory.model import Customer
from monitor.inventory.summary import summarize
from monitor.notify.email import headers
from tests.delivery_support import SECRETS, base_delivery, delivery_with, load


def test_example_loads_with_secrets_as_references(tmp_path: Path) -> None:
    inv = load(tmp_path)
    d = inv.delivery
    assert d is not None and d.smtp is not None and d.desk.password is not None
    assert d.desk.kind == "rt" and str(d.desk.password) == "Secret(env:RT_PASS)"
    assert d.desk.password.reveal() == SECRETS["RT_PASS"]
    assert d.oncall[0].shifts[0].days == (0, 1, 2, 3, 4) and d.oncall[0].shifts[1].start == 19 * 60
    assert d.technicians["ana"].language == "en" and d.escalation.after == 900.0
    assert d.retry.initial == 0.2 and d.customers.company == "Llanos Net"
    assert d.eta_min_change == 300.0  # default 5 min


def test_eta_min_change_is_a_duration(tmp_path: Path) -> None:
    d = load(tmp_path, 2, base_delivery(eta_min_change="15m")).delivery
    assert d is not None and d.eta_min_change == 900.0


_BAD_UNSUBSCRIBE = ("delivery.customers.unsubscribe: expected a mailto: address or an https:// URL in ASCII without "
                    "spaces, commas or <> (at most 500 characters; {customer} is replaced by the customer's id)")


@pytest.mark.parametrize(("change", "message"), [
    ({"smtp": {"host": "h", "password": "inline-pw"}},  # refused, and never echoed
     "delivery.smtp.password: secrets cannot be written inline; use {env: NAME}, {file: PATH} or {credential: NAME}"),
    ({"smtp": {"host": "h", "security": "ssl"}},
     "delivery.smtp.security: bad value 'ssl' (expected one of: none, starttls, tls)"),
    ({"desk": {"kind": "rt"}}, "delivery.desk: missing required key 'url' (needed for kind rt)"),
    ({"desk": {"kind": "email", "address": "nope"}},
     "delivery.desk.address: bad address 'nope' (expected the desk's mailbox, e.g. soporte@example.net)"),
    ({"oncall": [{"municipality": "bogota", "shifts": [{"days": ["mon"], "tiers": ["juan"]}]}]},
     "delivery.oncall[0].municipality: unknown municipality 'bogota' (expected an id from municipalities, or '*')"),
    ({"oncall": [{"municipality": "*", "shifts": [{"days": ["lun"], "tiers": ["juan"]}]}]},
     "delivery.oncall[0].shifts[0].days: bad day 'lun' (expected mon..sun or a range such as mon-fri)"),
    ({"oncall": [{"municipality": "*", "shifts": [{"days": ["mon"], "tiers": ["pedro"]}]}]},
     "delivery.oncall[0].shifts[0].tiers: unknown technician 'pedro' (expected an id from delivery.technicians)"),
    ({"oncall": [{"municipality": "*", "shifts": [{"days": ["mon"], "from": "7", "tiers": ["juan"]}]}]},
     "delivery.oncall[0].shifts[0].from: bad time '7' (expected HH:MM between 00:00 and 24:00; quote it in YAML)"),
    ({"customers": {"channels": ["fax"]}},
     "delivery.customers.channels: bad channel 'fax' (expected some of: email, sms, apprise)"),
    ({"timezone": "Mars/Olympus"},
     "delivery.timezone: unknown time zone 'Mars/Olympus' (expected an IANA name such as America/Bogota)"),
    ({"rate_limits": {"email": 0}}, "delivery.rate_limits.email: must be greater than 0 and at most 1000, got 0"),
    ({"retry": {"initial": "10s", "maximum": "1s"}}, "delivery.retry.maximum: must not be below initial"),
    ({"mqtt": {"host": "h", "prefix": "isp/#"}},
     "delivery.mqtt.prefix: bad topic prefix 'isp/#' (no wildcards, no trailing '/')"),
    ({"pager": {}}, "delivery: unknown key 'pager' (allowed: apprise, customers, desk, escalation, eta_min_change,"
                    " maildir, mqtt, oncall, rate_limits, retry, sms, smtp, technicians, templates_dir, timezone)"),
    ({"eta_min_change": 0}, "delivery.eta_min_change: must be greater than 0 and at most 1d, got 0"),
    ({"eta_min_change": "soon"},
     "delivery.eta_min_change: bad duration 'soon' (expected seconds, or a string like '30s', '500ms', '2m', '1d')"),
    ({"maildir": {"path": "mail"}},  # base_delivery() has smtp too
     "delivery.maildir: give either smtp or maildir, not both (both are where the email channel goes)"),
    ({"smtp": None, "maildir": {"from": "noc@isp.example"}}, "delivery.maildir: missing required key 'path'"),
    ({"smtp": None, "maildir": "mail"}, "delivery.maildir: expected a mapping, got a string"),
    ({"desk": {"kind": "folder"}}, "delivery.desk: missing required key 'path' (needed for kind folder)"),
    ({"customers": {"unsubscribe": "https://isp.example/baja>, <https://evil.example"}}, _BAD_UNSUBSCRIBE),
    ({"customers": {"unsubscribe": "bajas@isp.example"}}, _BAD_UNSUBSCRIBE),
    ({"customers": {"unsubscribe": "mailto:bajas@isp.example", "unsubscribe_one_click": True}},
     "delivery.customers.unsubscribe_one_click: needs an https:// unsubscribe URL (RFC 8058: a POST to it opts out)"),
    ({"desk": {"kind": "rt", "url": "http://rt", "token": {"env": "RT_PASS"}, "path": "x"}},
     "delivery.desk.path: 'path' is for kind folder, not rt"),
])
def test_each_mistake_is_reported_with_its_key_path(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, 2, base_delivery(**change))
    assert any(p.split(": ", 1)[1] == message for p in err.value.problems), err.value.problems
    assert "inline-pw" not in str(err.value)
    for name, value in SECRETS.items():
        assert name == "RT_PASS" or value not in str(err.value)  # RT's test password is the word "password"


def test_maildir_and_folder_desk_resolve_against_the_config_folder(tmp_path: Path) -> None:
    d = load(tmp_path, 2, base_delivery(smtp=None, maildir={"path": "out/mail", "from": "NOC <noc@isp.example>"},
                                        desk={"kind": "folder", "path": "out/tickets"})).delivery
    assert d is not None and d.maildir is not None and d.email and d.smtp is None
    assert d.maildir.path == str(tmp_path / "out/mail") and d.maildir.sender == "NOC <noc@isp.example>"
    assert d.desk.kind == "folder" and d.desk.path == str(tmp_path / "out/tickets")


def test_templates_and_ca_files_resolve_against_the_config_folder(tmp_path: Path) -> None:
    d = load(tmp_path, 2, base_delivery(
        templates_dir="templates", smtp={"host": "127.0.0.1", "ca_file": "ca/smtp.pem"},
        mqtt={"host": "127.0.0.1", "tls": True, "ca_file": "/etc/ssl/broker.pem"})).delivery
    assert d is not None and d.smtp is not None and d.mqtt is not None
    assert d.templates_dir == str(tmp_path / "templates") and d.smtp.ca_file == str(tmp_path / "ca/smtp.pem")
    assert d.mqtt.ca_file == "/etc/ssl/broker.pem"  # absolute stays as given
    assert load(tmp_path, 2, base_delivery()).delivery.templates_dir == ""  # type: ignore[union-attr]


def test_check_config_summary_says_where_delivery_goes_without_secrets(tmp_path: Path) -> None:
    inv = load(tmp_path, 5, delivery_with(smtp={"host": "127.0.0.1", "port": 2525, "security": "starttls",
                                                "username": "noc", "password": {"env": "SMTP_PASS"},
                                                "from": "NOC <noc@isp.example>"}))
    text = summarize(inv)
    assert ("delivery: desk RT at http://127.0.0.1:9 (queue General); email SMTP 127.0.0.1:2525 (starttls, auth,"
            " pool 4); mqtt 127.0.0.1:1883, prefix isp; sms off") in text
    assert "technicians: 4, on-call rules 2, escalation after 15 min (up to tier 3); customer notices" \
           " outage/suspected by email" in text
    assert "api: off" in text
    assert not [v for v in SECRETS.values() if v in text]


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(url=st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=80).map(
    lambda s: "https://isp.example/" + s), cid=st.text(max_size=20))
def test_any_unsubscribe_url_is_refused_or_makes_one_well_formed_header(tmp_path: Path, url: str, cid: str) -> None:
    """Hostile config text cannot break the header: it is refused, or it is one ``<...>`` entry on one line."""
    try:
        inv = load(tmp_path, 1, base_delivery(customers={"unsubscribe": url + "?c={customer}"}))
    except ConfigError:
        return  # refused (or not even YAML: a control character)
    assert inv.delivery is not None
    customer = Customer(cid, "x", "residencial", email="c@example.com")
    out = Plan()
    _to_customer(out, "INC-1", "customer_opened", customer, 1, "customer_opened", {}, Context(inv, inv.delivery))
    row = Row("k", "INC-1", "customer_opened", "c", "email", "", {**out.items[0].data, "subject": "s", "body": "b"},
              id=1, attempts=0, uncertain=False, created_at=0.0)
    value = dict(headers(row, "noc@isp.example"))["List-Unsubscribe"]
    assert re.fullmatch(r"<https://[!-+\--;=?-~]+>", value), value
