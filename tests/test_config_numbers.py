"""Every number in the config is finite and within a sane range (issue 10, "Config and reload").

Before: ``.nan``/``.inf`` passed every ``<=`` check (``interval: .nan`` killed ``monitor run``,
``icmp_timeout: .nan`` marked every healthy target DOWN, ``flush_interval: .nan`` spun a core and
ignored SIGTERM) and absurd values such as ``down_after: 10**29`` were accepted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.inventory.loader import load_inventory
from tests.test_inventory import BASE, ENV

CUSTOMERS_LINE = 14  # a section inserted before "customers:" in BASE starts on this line

# (where the value goes: a BASE edit or a section before customers, the key path, its line)
SECTION = [
    *[(f"polling: {{{k}: V}}", f"polling.{k}") for k in (
        "interval", "icmp_count", "icmp_timeout", "icmp_spacing", "down_after", "up_after", "degraded_after")],
    *[(f"polling: {{thresholds: {{{k}: V}}}}", f"polling.thresholds.{k}") for k in (
        "loss_pct", "rtt_ms", "jitter_ms", "signal_dbm_min", "optical_rx_dbm_min", "optical_rx_dbm_max",
        "ccq_pct_min")],
    ("polling_by_kind: {router: {interval: V}}", "polling_by_kind.router.interval"),
    ("daemon: {concurrency: V}", "daemon.concurrency"),
    *[(f"timeseries: {{{k}: V}}", f"timeseries.{k}") for k in (
        "batch_size", "flush_interval", "timeout", "spool_max_bytes")],
    *[(f"delivery: {{smtp: {{host: mail.example, {k}: V}}}}", f"delivery.smtp.{k}") for k in (
        "port", "pool_size", "timeout")],
    *[(f"delivery: {{mqtt: {{host: mqtt.example, {k}: V}}}}", f"delivery.mqtt.{k}") for k in ("port", "keepalive")],
    ("delivery: {sms: {url: 'http://127.0.0.1:1/', timeout: V}}", "delivery.sms.timeout"),
    *[(f"delivery: {{desk: {{kind: none, {k}: V}}}}", f"delivery.desk.{k}") for k in (
        "comment_min_interval", "comment_min_change", "reopen_within")],
    *[(f"delivery: {{escalation: {{{k}: V}}}}", f"delivery.escalation.{k}") for k in ("after", "max_tier")],
    *[(f"delivery: {{customers: {{{k}: V}}}}", f"delivery.customers.{k}") for k in (
        "update_min_interval", "maintenance_lead")],
    ("delivery: {rate_limits: {email: V}}", "delivery.rate_limits.email"),
    *[(f"delivery: {{retry: {{{k}: V}}}}", f"delivery.retry.{k}") for k in (
        "initial", "maximum", "factor", "jitter", "deadline")],
    ("delivery: {eta_min_change: V}", "delivery.eta_min_change"),
    ("api: {listen: '', link_ttl: V}", "api.link_ttl"),
    *[(f"status_page: {{listen: '', {k}: V}}", f"status_page.{k}") for k in (
        "lookup_per_minute", "refresh", "history_days")],
    *[(f"correlation: {{{k}: V}}", f"correlation.{k}") for k in (
        "interval", "settle", "W", "K", "P", "hold_down", "grace", "blind_share", "blind_min", "blind_recovery",
        "update_interval", "degraded_settle", "levels_hold_down", "burst_odds", "burst_prior", "burst_history",
        "down_after", "up_after")],
]
IN_PLACE = [  # (BASE text, its replacement with V, key path, line)
    ("lat: 7.08", "lat: V", "sites[0].lat", 5), ("lon: -70.76", "lon: V", "sites[0].lon", 5),
    ("response_hours: 24", "response_hours: V", "service_classes.residencial.response_hours", 7),
    ("availability_target: 98.0", "availability_target: V", "service_classes.residencial.availability_target", 7),
    *[("credentials: v2}}\n  - {id: ap-1", f"credentials: v2, {k}: V}}}}\n  - {{id: ap-1", f"nodes[0].snmp.{k}", 11)
      for k in ("port", "timeout", "retries", "walk_max_rows", "walk_max_bytes")],
]
WHERE = [(f"{text}\ncustomers:\n", "customers:\n", path, CUSTOMERS_LINE) for text, path in SECTION] + [
    (new, old, path, line) for old, new, path, line in IN_PLACE]
HOSTILE = (".nan", ".NaN", ".inf", "-.inf", "1.0e+300", "-1.0e+300", "1" + "0" * 29, "-" + "1" * 30)


def problems_of(folder: Path, text: str) -> list[str]:
    (folder / "sites.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_inventory(folder / "sites.yaml", env=ENV)
    return [p.removeprefix(f"{folder}/") for p in info.value.problems]


def section_problems(folder: Path, section: str) -> list[str]:
    """The problems of BASE with ``section`` (one line of YAML) added before customers (at CUSTOMERS_LINE)."""
    return problems_of(folder, BASE.replace("customers:\n", f"{section}\ncustomers:\n"))


@pytest.mark.parametrize(("new", "old", "path", "line"), WHERE, ids=[w[2] for w in WHERE])
def test_every_number_refuses_nan_infinity_and_absurd_values(tmp_path: Path, new: str, old: str, path: str,
                                                             line: int) -> None:
    assert BASE.count(old) == 1
    for value in HOSTILE:
        got = problems_of(tmp_path, BASE.replace(old, new.replace("V", value)))
        assert got and all(p.startswith(f"sites.yaml:{line}: {path}: ") for p in got), (value, got)


@pytest.mark.parametrize(("new", "old", "path", "line"), WHERE, ids=[w[2] for w in WHERE])
def test_every_number_has_a_range_that_holds_its_default(tmp_path: Path, new: str, old: str, path: str,
                                                         line: int) -> None:
    """The mistakes above are caught by a range, not by luck: an ordinary value still loads."""
    ordinary = {"lat": "7", "lon": "-70", "port": "1161", "keepalive": "60", "factor": "2", "jitter": "0.5",
                "loss_pct": "20", "signal_dbm_min": "-80", "optical_rx_dbm_min": "-27", "optical_rx_dbm_max": "-8",
                "P": "50", "blind_share": "0.5", "burst_odds": "1e-9", "burst_prior": "0.2", "burst_history": "14d",
                "K": "3", "blind_min": "10", "max_tier": "3", "rtt_ms": "150", "jitter_ms": "30", "settle": "30",
                "interval": "30", "availability_target": "98", "response_hours": "24", "ccq_pct_min": "60",
                "walk_max_rows": "5000", "walk_max_bytes": "65536", "lookup_per_minute": "10", "refresh": "5",
                "history_days": "30"}
    key = path.rsplit(".", 1)[-1].split("[")[0]
    value = ordinary.get(key, "2")
    (tmp_path / "sites.yaml").write_text(BASE.replace(old, new.replace("V", value)), encoding="utf-8")
    load_inventory(tmp_path / "sites.yaml", env=ENV)


EXACT = [
    ("polling: {interval: .nan}", "polling.interval: must be a finite number between 0.1s and 1d, got nan"),
    ("polling: {interval: .inf}", "polling.interval: must be a finite number between 0.1s and 1d, got inf"),
    ("polling: {interval: 2d}", "polling.interval: must be between 0.1s and 1d, got 2d"),
    ("polling: {interval: 0.05}", "polling.interval: must be between 0.1s and 1d, got 0.05"),
    ("polling: {icmp_timeout: .nan}",
     "polling.icmp_timeout: must be a finite number greater than 0 and at most 1m, got nan"),
    ("polling: {down_after: 100000000000000000000000000000}",
     "polling.down_after: must be between 1 and 100, got 100000000000000000000000000000"),
    ("polling: {down_after: .nan}", "polling.down_after: expected an integer, got a number"),
    ("polling: {thresholds: {rtt_ms: -.inf}}",
     "polling.thresholds.rtt_ms: must be a finite number greater than 0 and at most 60000, got -inf"),
    ("polling: {thresholds: {signal_dbm_min: 40}}",
     "polling.thresholds.signal_dbm_min: must be between -150 and 30, got 40"),
    ("timeseries: {flush_interval: .nan}",
     "timeseries.flush_interval: must be a finite number between 0.01s and 1h, got nan"),
    ("timeseries: {flush_interval: 0}", "timeseries.flush_interval: must be between 0.01s and 1h, got 0"),
    ("timeseries: {timeout: 1.0e+300}", "timeseries.timeout: must be greater than 0 and at most 10m, got 1e+300"),
    ("daemon: {concurrency: 1000000}", "daemon.concurrency: must be between 1 and 100000, got 1000000"),
    ("delivery: {retry: {factor: .inf}}",
     "delivery.retry.factor: must be a finite number between 1 and 10, got inf"),
    ("delivery: {desk: {kind: none, reopen_within: 90d}}",
     "delivery.desk.reopen_within: must be between 0 and 30d, got 90d"),
    ("api: {listen: '', link_ttl: 99999999999999999999999999999999}",
     "api.link_ttl: must be greater than 0 and at most 30d, got 99999999999999999999999999999999"),
    ("correlation: {P: .nan}", "correlation.P: min_share must be a finite number greater than 0 and at most 100, "
                               "got nan"),
    ("correlation: {W: 2000000}", "correlation.W: window must be greater than 0 and at most 7d, got 2e+06"),
    ("correlation: {W: .nan}", "correlation.W: expected a duration like 90, 90s, 5m, 2h"),
    ("correlation: {K: 100000000000000000000000000000}",
     "correlation.K: min_endpoints must be between 1 and 1000000, got 1e+29"),
    ("daemon: {metrics_listen: '127.0.0.1:²'}",
     "daemon.metrics_listen: bad listen address '127.0.0.1:²' (expected HOST:PORT such as 127.0.0.1:9108, or '' "
     "to disable /metrics)"),
]


@pytest.mark.parametrize(("section", "expected"), EXACT, ids=[e[0] for e in EXACT])
def test_mistaken_number_is_reported_exactly(tmp_path: Path, section: str, expected: str) -> None:
    assert section_problems(tmp_path, section) == [f"sites.yaml:{CUSTOMERS_LINE}: {expected}"]
