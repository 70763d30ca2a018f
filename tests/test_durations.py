"""One duration grammar everywhere, and the ``correlation:`` section parsed once, at load time.

Why: the config's sections, its ``correlation:`` settings, ``monitor replay --set`` and the staff
CLI's ``--duration`` each read durations; a NOC must be able to write ``1d`` or ``500ms`` in any of
them and mean the same number of seconds, and a typo must be refused by all of them alike.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.correlate.settings import CorrelationOverrides, CorrelationSettings, derive
from monitor.durations import fmt_seconds, parse_duration, to_seconds
from monitor.errors import ConfigError
from monitor.incidents_cli import _duration
from monitor.inventory.fields import Problems, Section
from monitor.inventory.loader import load_inventory
from monitor.inventory.yaml_lines import LMap
from monitor.pipeline import correlation_settings
from monitor.replay import settings_for
from tests.test_inventory import BASE, ENV

UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _config_reads(text: str) -> float | None:
    """What a config section (``polling.interval``, ``api.link_ttl`` ...) reads from ``key: text``."""
    data = LMap(1)
    data["key"], data.key_lines["key"], data.value_lines["key"] = text, 1, 1
    problems = Problems()
    value = Section(problems, "x.yaml", data, "").duration("key", -1.0, gt=None, ge=0.0, le=math.inf)
    return None if problems else value


def _correlation_reads(text: str) -> float | None:
    """What the ``correlation:`` section and ``monitor replay --set`` read from ``hold_down=text``."""
    try:
        value = CorrelationOverrides.parse({"hold_down": text}).get("hold_down")
    except ConfigError:
        return None
    assert isinstance(value, float)
    return value


def _cli_reads(text: str) -> float | None:
    """What ``monitor maintenance add --duration text`` reads."""
    try:
        return _duration(text)
    except ConfigError:
        return None


durations = st.builds(
    lambda whole, frac, space, unit: f"{whole}{frac}{space}{unit}",
    st.integers(0, 10**6).map(str), st.sampled_from(["", ".5", ".25", ".0"]), st.sampled_from(["", " "]),
    st.sampled_from(sorted(UNITS)),
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(durations)
def test_every_place_reads_a_duration_the_same(text: str) -> None:
    number, unit = text.rstrip("mshd").strip(), text[len(text.rstrip("mshd")):]
    expected = float(number) * UNITS[unit]
    assert to_seconds(text) == parse_duration(text) == expected
    assert _config_reads(text) == _correlation_reads(text) == _cli_reads(text) == expected


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=12))
def test_every_place_refuses_the_same_text(text: str) -> None:
    """Whatever the text, the three readers agree: the same seconds, or all three refuse it."""
    results = {_config_reads(text), _correlation_reads(text), _cli_reads(text)}
    assert len(results) == 1, (text, results)
    if to_seconds(text) is None:
        assert results == {None}
        with pytest.raises(ValueError, match="expected a duration"):
            parse_duration(text)


@pytest.mark.parametrize("text", ["1d", "2 h", "5000ms", "1.5m", "90"])
def test_config_sections_and_correlation_accept_the_same_units(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "sites.yaml"
    cfg.write_text(BASE.replace("customers:\n", f"polling: {{interval: {text}}}\ncorrelation: {{hold_down: {text}}}\n"
                                "customers:\n", 1), encoding="utf-8")
    inv = load_inventory(cfg, env=ENV)
    assert inv.correlation.get("hold_down") == inv.polling.interval == to_seconds(text)


def test_fmt_seconds_writes_what_the_grammar_reads() -> None:
    for seconds in (0.0, 0.5, 30.0, 90.0, 300.0, 7200.0, 86400.0, 3 * 86400.0):
        assert to_seconds(fmt_seconds(seconds)) == seconds


def test_correlation_section_is_typed_once_and_derived_in_one_place(tmp_path: Path) -> None:
    """The daemon and replay build their settings from the typed section; ``--set interval`` re-derives
    only what neither the config nor ``--set`` gave."""
    cfg = tmp_path / "sites.yaml"
    cfg.write_text(BASE.replace("customers:\n", "polling: {interval: 2m}\ncorrelation: {hold_down: 10m, K: 4}\n"
                                "customers:\n", 1), encoding="utf-8")
    inv = load_inventory(cfg, env=ENV)
    assert inv.correlation == CorrelationOverrides((("hold_down", 600.0), ("min_endpoints", 4)))
    daemon = correlation_settings(inv)
    assert daemon == settings_for(inv) == derive(120.0, inv.correlation)
    assert (daemon.settle, daemon.window, daemon.hold_down, daemon.min_endpoints) == (120.0, 240.0, 600.0, 4)
    what_if = settings_for(inv, {"interval": "30", "K": "6"})
    assert (what_if.settle, what_if.window, what_if.grace) == (30.0, 60.0, 150.0)  # derived again
    assert (what_if.hold_down, what_if.min_endpoints) == (600.0, 6)  # the config's, and --set's over it
    assert derive(60.0, CorrelationOverrides()) == CorrelationSettings.for_interval(60.0)


def test_bad_set_names_every_item() -> None:
    with pytest.raises(ConfigError) as err:
        CorrelationOverrides.parse({"W": "soon", "nope": "1", "K": "x"})
    assert err.value.problems == [
        "--set W=soon: expected a duration like 90, 90s, 5m, 2h",
        "--set nope: unknown setting (known: " + err.value.problems[1].split("(known: ", 1)[1],
        "--set K=x: expected a whole number",
    ]
