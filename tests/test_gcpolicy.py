"""The daemon's GC policy (issue 12): full collections held from the start until every target has
been polled once, then the first pass's state frozen and the thresholds as they were."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from monitor.daemon import Daemon
from monitor.gcpolicy import FirstPassGc
from tests.servers.common import free_port, until
from tests.test_daemon import write_config


def _full_collections() -> int:
    return int(gc.get_stats()[2]["collections"])


async def test_full_collections_wait_for_the_release_and_the_thresholds_come_back() -> None:
    # survivors: a full collection runs once those promoted since the last one exceed a quarter of
    # the oldest generation, so half of its size (at least 300,000) makes some with the defaults
    n = max(300_000, len(gc.get_objects(generation=2)) // 2)
    full = _full_collections()
    kept = [[i] for i in range(n)]
    assert _full_collections() > full  # the control: without the hold this churn collects in full
    del kept
    before = gc.get_threshold()
    policy = FirstPassGc()
    policy.hold(600.0)
    try:
        assert policy.held and gc.get_threshold()[:2] == before[:2] and gc.get_threshold()[2] > 10**6
        full = _full_collections()
        kept = [[i] for i in range(n)]  # many young and middle collections, no full one
        assert _full_collections() == full
        del kept
    finally:
        policy.release()
    assert not policy.held and gc.get_threshold() == before
    policy.release()  # a second release (the daemon's stop after its first pass) changes nothing
    assert gc.get_threshold() == before


async def test_the_hold_ends_at_its_time_limit_when_the_first_pass_never_completes() -> None:
    before = gc.get_threshold()
    policy = FirstPassGc()
    policy.hold(0.05)
    try:
        await until(lambda: not policy.held, 30.0, "the hold's time limit")
    finally:
        policy.release()
    assert gc.get_threshold() == before


async def test_the_daemon_releases_after_its_first_pass_and_at_its_stop(tmp_path: Path) -> None:
    before = gc.get_threshold()
    daemon = Daemon(write_config(tmp_path, free_port()))
    task = asyncio.create_task(daemon.run())
    try:
        await until(daemon.ready.is_set, 60.0, "the daemon's start")
        await until(lambda: not daemon._gc.held, 60.0, "the first pass")
        assert gc.get_threshold() == before
        assert len(daemon.polling.states) == 3
    finally:
        daemon.request_stop()
        await task
    assert gc.get_threshold() == before
