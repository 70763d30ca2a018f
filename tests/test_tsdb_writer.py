"""Writer behaviour that needs no database, or a database that never answers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.errors import StorageError, StoragePermanent, StorageRefused, StorageRetryable
from monitor.inventory.model import TimeseriesSettings
from monitor.tsdb import make_writer
from monitor.tsdb.backend import http_error, public_url
from monitor.tsdb.writer import TimeseriesWriter
from tests.servers.common import until
from tests.tsdb_support import icmp_stream, make


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A real TCP server that accepts connections and never answers: a hung database."""
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


def spooled_points(spool: Path) -> int:
    return sum(f.read_bytes().count(b"\n") for f in spool.glob("*.lp"))


def test_no_database_configured_means_no_writer(tmp_path: Path) -> None:
    assert make_writer(TimeseriesSettings(), tmp_path) is None
    assert not (tmp_path / "spool").exists()


async def test_spool_dir_defaults_under_the_state_dir(tmp_path: Path) -> None:
    writer = make_writer(TimeseriesSettings(kind="influxdb1", url="http://127.0.0.1:1", database="x"), tmp_path)
    assert isinstance(writer, TimeseriesWriter)
    assert (tmp_path / "spool" / "spool.lock").exists()
    await writer.close()


async def test_a_hung_database_never_blocks_submit_and_memory_stays_bounded(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    settings = TimeseriesSettings(kind="influxdb1", url="", database="monitor", batch_size=10,
                                  flush_interval=0.01, timeout=30.0)
    async with silent_server() as url:
        writer = make(dataclasses.replace(settings, url=url), spool, max_buffer_points=50)
        task = asyncio.create_task(writer.run())
        writer.submit(icmp_stream(0))
        await until(lambda: writer.buffered_points == 0, what="first batch in flight")
        for s in range(1, 31):
            writer.submit(icmp_stream(s))  # returns at once although the first write hangs
        assert writer.buffered_points == 300
        # the last spilled batch leaves the buffer before its segment is on disk: wait for both
        await until(lambda: writer.buffered_points <= 50 and writer.spool_points >= 250,
                    what="overflow spilled to the spool")
        task.cancel()  # the daemon's TaskGroup going down: nothing in memory may be lost
        with pytest.raises(asyncio.CancelledError):
            await task
        await writer.close()
    assert spooled_points(spool) == writer.spool_points == 310  # the hung batch too
    sent = sorted(int(line.split(b"sent=")[1].split(b"i")[0]) for f in sorted(spool.glob("*.lp"))
                  for line in f.read_bytes().splitlines())
    assert sent == sorted(s for s in range(31) for _ in range(10))


async def test_spool_replays_in_order_of_submission(tmp_path: Path) -> None:
    """Segments are named by a sequence taken when a batch leaves the buffer: the file order is the
    submission order, even for a batch whose failed write was spooled after later ones."""
    settings = TimeseriesSettings(kind="influxdb1", url="http://127.0.0.1:1", database="x", batch_size=10)
    spool = tmp_path / "spool"
    writer = make(settings, spool)
    for s in range(12):
        writer.submit(icmp_stream(s))
    await writer.close()
    order = [int(line.split(b"sent=")[1].split(b"i")[0]) for f in sorted(spool.glob("*.lp"))
             for line in f.read_bytes().splitlines()]
    assert order == [s for s in range(12) for _ in range(10)]


async def test_one_writer_per_spool_dir(tmp_path: Path) -> None:
    settings = TimeseriesSettings(kind="influxdb1", url="http://127.0.0.1:1", database="x")
    first = make(settings, tmp_path)
    with pytest.raises(StorageError, match="in use"):
        make(settings, tmp_path)
    await first.close()
    await make(settings, tmp_path).close()  # released on close


@pytest.mark.parametrize(("status", "kind"), [(500, StorageRetryable), (503, StorageRetryable),
                                              (429, StorageRetryable), (400, StoragePermanent),
                                              (413, StoragePermanent), (401, StorageRefused),
                                              (403, StorageRefused), (404, StorageRefused)])
def test_http_status_classification(status: int, kind: type[Exception]) -> None:
    """401/403/404 refuse the writer, not the batch: held until the settings work (was: dropped)."""
    error = http_error("influxdb1 http://db:8086", status, "x " * 500)
    assert type(error) is kind
    if isinstance(error, StorageRefused):
        assert error.reason == ("not_found" if status == 404 else "auth")
    assert len(str(error)) < 260  # a server echoing a whole batch does not flood the log


def test_logged_url_has_no_user_info() -> None:
    assert public_url("https://noc:s3cret@influx.example:8086/path?u=a&p=b") == "https://influx.example:8086"
    assert public_url("http://[::1]:8086") == "http://[::1]:8086"


async def test_reconfigure_keeps_buffer_and_spool_and_says_what_takes_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="monitor.tsdb")
    settings = TimeseriesSettings(kind="influxdb1", url="http://127.0.0.1:1", database="x", batch_size=10)
    writer = make(settings, tmp_path / "spool")
    writer.submit(icmp_stream(0) + icmp_stream(1))
    await writer.reconfigure(settings)  # unchanged: nothing to do, nothing logged
    await writer.reconfigure(dataclasses.replace(settings, kind="none"))
    assert writer.settings == settings  # still writing: off takes a restart
    await writer.reconfigure(dataclasses.replace(settings, spool_dir="elsewhere", batch_size=5,
                                                 url="http://127.0.0.1:2"))
    assert (writer.settings.spool_dir, writer.settings.batch_size) == ("", 5)
    assert writer.settings.url == "http://127.0.0.1:2" and writer.buffered_points == 20
    await writer.close()
    assert spooled_points(tmp_path / "spool") == 20 and not (tmp_path / "elsewhere").exists()
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("time series: turning them off or moving the spool takes a restart") == 2
    assert messages.count("time series writer reconfigured") == 1
