"""SNMP that does not answer is told in one line per poll pass, not one warning per target (issue 18)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from monitor.daemon import Daemon
from monitor.polling.snmp_news import Line, SnmpNews
from tests.servers.common import free_port, until

SILENT = 12  # SNMP nodes whose agent never answers: a UDP port where nothing listens


def config(folder: Path, snmp_port: int) -> Path:
    (folder / "community").write_text("public\n")
    nodes = "\n".join(
        f"  - {{id: ap-{i:02d}, kind: ap, address: 127.0.5.{i + 1}, parent: core,"
        f" snmp: {{profile: airos, credentials: lab, port: {snmp_port}, timeout: 0.2, retries: 0}}}}"
        for i in range(SILENT))
    path = folder / "sites.yaml"
    path.write_text(f"""
municipalities: [{{id: m1, name: Municipio Uno}}]
sites: [{{id: s1, municipality: m1, name: Torre Uno}}]
service_classes:
  residencial: {{response_hours: 24, availability_target: 98.0}}
credentials:
  lab: {{version: 2c, community: {{file: community}}}}
polling: {{interval: 0.5, icmp_count: 1, icmp_timeout: 0.2, down_after: 2, up_after: 2}}
daemon: {{state_dir: var, metrics_listen: ""}}
nodes:
  - {{id: core, kind: router, address: 127.0.0.1}}
{nodes}
""")
    return path


class Counting(SnmpNews):
    """The daemon's own summariser, counting the polls it is told of (to wait for passes)."""

    def __init__(self) -> None:
        super().__init__()
        self.polls: dict[str, int] = {}

    def note(self, target: str, ok: bool, error: str = "") -> list[Line]:
        self.polls[target] = self.polls.get(target, 0) + 1
        return super().note(target, ok, error)


@pytest.mark.root
async def test_silent_agents_make_one_warning_for_the_whole_network(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    daemon = Daemon(config(tmp_path, free_port()))
    news = daemon.polling.snmp_news = Counting()
    task = asyncio.create_task(daemon.run())

    def told() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("snmp not answering")]

    try:
        await until(lambda: len(told()) >= 1, 60, "the SNMP summary line")
        # three more passes of every agent: nothing changed, nothing more is said
        await until(lambda: len(news.polls) == SILENT and min(news.polls.values()) >= 4, 60, "three more passes")
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 15)
    (line,) = told()
    assert line.getMessage() == f"snmp not answering on {SILENT} targets"
    kv = line.kv  # type: ignore[attr-defined]
    assert kv["targets"] == "ap-00, ap-01, ap-02, ap-03, ap-04, ap-05, ap-06, ap-07, ap-08, ap-09 … (+2)"
    assert kv["error"]


def test_changes_are_told_once_per_pass_and_only_changes() -> None:
    news = SnmpNews()
    assert news.note("a", True) == [] and news.note("b", False, "timeout: no answer") == []
    assert news.note("c", False, "timeout: no answer") == []
    (line,) = news.note("a", True)                      # a polled again: the pass is over
    assert (line.level, line.msg, line.kv) == (logging.WARNING, "snmp not answering on 2 targets",
                                               {"targets": "b, c", "error": "timeout"})
    for t in ("b", "c"):
        assert news.note(t, False, "timeout") == []
    assert news.note("a", True) == []                   # nothing changed in that pass: silence
    news.note("b", True)
    news.note("c", False, "auth: wrong community")
    lines = news.note("a", True)
    assert [(x.msg, x.kv) for x in lines] == [("snmp answering again on 1 target", {"targets": "b"})]
    news.forget("c")
    assert news.flush() == [] and "c" not in news.ok


def test_errors_of_several_kinds_are_counted() -> None:
    news = SnmpNews()
    news.note("a", False, "timeout")
    news.note("b", False, "auth: bad community")
    news.note("c", False, "timeout")
    (line,) = news.flush()
    assert line.kv == {"targets": "a, b, c", "error": "timeout (2), auth (1)"}
